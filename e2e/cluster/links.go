package cluster

import "fmt"

// RemoveLink deletes the link called name in the node's network namespace.
func (n *Node) RemoveLink(name string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("node %s: link %s: %w", n.Name, name, err)
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("node %s: delete link %s: %w", n.Name, name, err)
	}
	return nil
}

// LinkNames lists the links in the node's network namespace.
func (n *Node) LinkNames() ([]string, error) {
	h, err := n.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("node %s: list links: %w", n.Name, err)
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names, nil
}
