package engine

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// The swarm objects below carry the fields vxsafe reads; they are the same from API 1.41 (Docker 20.10)
// to 1.56 (moby v2). A service's Spec is kept as the daemon sent it (json.RawMessage), so that an update
// sends back every field, also those this client does not know.

// SwarmService is a service as GET /services and GET /services/{id} describe it.
type SwarmService struct {
	ID      string `json:"ID"`
	Version struct {
		Index uint64 `json:"Index"`
	} `json:"Version"`
	Spec         json.RawMessage `json:"Spec"`
	PreviousSpec json.RawMessage `json:"PreviousSpec,omitempty"`
	UpdateStatus *UpdateStatus   `json:"UpdateStatus,omitempty"`
}

// UpdateStatus is a service's rolling update: State is one of updating, paused, completed,
// rollback_started, rollback_paused, rollback_completed.
type UpdateStatus struct {
	State     string `json:"State"`
	StartedAt string `json:"StartedAt"` // RFC 3339
	Message   string `json:"Message"`
}

// Task is a swarm task (GET /tasks): a service's replica, or a standalone container's attachment to a
// swarm network (Spec.NetworkAttachmentSpec).
type Task struct {
	ID           string `json:"ID"`
	ServiceID    string `json:"ServiceID"`
	NodeID       string `json:"NodeID"`
	DesiredState string `json:"DesiredState"`
	Status       struct {
		Timestamp string `json:"Timestamp"`
		State     string `json:"State"`
		Message   string `json:"Message"`
		Err       string `json:"Err"`
	} `json:"Status"`
	Spec struct {
		NetworkAttachmentSpec *struct {
			ContainerID string `json:"ContainerID"`
		} `json:"NetworkAttachmentSpec"`
	} `json:"Spec"`
	NetworksAttachments []struct {
		Network struct {
			ID string `json:"ID"`
		} `json:"Network"`
		Addresses []string `json:"Addresses"`
	} `json:"NetworksAttachments"`
}

// Networks are the IDs of the networks the task is attached to.
func (t Task) Networks() []string {
	var out []string
	for _, a := range t.NetworksAttachments {
		out = append(out, a.Network.ID)
	}
	return out
}

// SwarmNode is a node as GET /nodes describes it.
type SwarmNode struct {
	ID   string `json:"ID"`
	Spec struct {
		Role         string `json:"Role"`
		Availability string `json:"Availability"`
	} `json:"Spec"`
	Description struct {
		Hostname string `json:"Hostname"`
		Engine   struct {
			Plugins []struct {
				Type string `json:"Type"`
				Name string `json:"Name"`
			} `json:"Plugins"`
		} `json:"Engine"`
	} `json:"Description"`
	Status struct {
		State string `json:"State"`
		Addr  string `json:"Addr"`
	} `json:"Status"`
}

// Services lists the swarm's services (a manager answers).
func (c *Client) Services() ([]SwarmService, error) {
	var out []SwarmService
	err := c.Get("/services", &out)
	return out, err
}

// ServiceInspect reads service id.
func (c *Client) ServiceInspect(id string) (SwarmService, error) {
	var s SwarmService
	err := c.Get("/services/"+url.PathEscape(id), &s)
	return s, err
}

// UpdateService replaces the spec of service id at version (its Version.Index as read: the daemon
// refuses an update of a service changed since); with rollback, the daemon goes back to the service's
// previous spec instead (docker service rollback). It returns the daemon's warnings.
func (c *Client) UpdateService(id string, version uint64, spec json.RawMessage, rollback bool) ([]string, error) {
	q := url.Values{"version": {strconv.FormatUint(version, 10)}}
	if rollback {
		q.Set("rollback", "previous")
	}
	var out struct {
		Warnings []string `json:"Warnings"`
	}
	err := c.Do(http.MethodPost, "/services/"+url.PathEscape(id)+"/update?"+q.Encode(), spec, &out)
	return out.Warnings, err
}

// Tasks lists the swarm's tasks matching filters (e.g. {"service": {id}}; nil: every task).
func (c *Client) Tasks(filters map[string][]string) ([]Task, error) {
	path := "/tasks"
	if len(filters) > 0 {
		f, err := json.Marshal(filters)
		if err != nil {
			return nil, fmt.Errorf("tasks filters: %w", err)
		}
		path += "?filters=" + url.QueryEscape(string(f))
	}
	var out []Task
	err := c.Get(path, &out)
	return out, err
}

// Nodes lists the swarm's nodes (a manager answers).
func (c *Client) Nodes() ([]SwarmNode, error) {
	var out []SwarmNode
	err := c.Get("/nodes", &out)
	return out, err
}

// NetworkCreate is the body of POST /networks/create.
type NetworkCreate struct {
	Name           string            `json:"Name"`
	CheckDuplicate bool              `json:"CheckDuplicate"`
	Driver         string            `json:"Driver"`
	Scope          string            `json:"Scope,omitempty"`
	Internal       bool              `json:"Internal"`
	Attachable     bool              `json:"Attachable"`
	EnableIPv6     bool              `json:"EnableIPv6"`
	IPAM           *IPAM             `json:"IPAM,omitempty"`
	Options        map[string]string `json:"Options,omitempty"`
	Labels         map[string]string `json:"Labels,omitempty"`
}

// CreateNetwork creates a network; on a swarm manager, a network of a driver with global scope is a
// swarm network. It returns the new network's ID.
func (c *Client) CreateNetwork(req NetworkCreate) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	if err := c.Do(http.MethodPost, "/networks/create", req, &out); err != nil {
		return "", fmt.Errorf("create network %q: %w", req.Name, err)
	}
	return out.ID, nil
}

// RemoveNetwork removes network id.
func (c *Client) RemoveNetwork(id string) error {
	return c.Do(http.MethodDelete, "/networks/"+url.PathEscape(id), nil, nil)
}

// EndpointSettings is what a container's connection to a network asks for.
type EndpointSettings struct {
	Aliases []string `json:"Aliases,omitempty"`
}

// ConnectNetwork connects container to network (on this daemon), with aliases.
func (c *Client) ConnectNetwork(network, container string, aliases []string) error {
	body := struct {
		Container      string           `json:"Container"`
		EndpointConfig EndpointSettings `json:"EndpointConfig"`
	}{container, EndpointSettings{Aliases: aliases}}
	return c.Do(http.MethodPost, "/networks/"+url.PathEscape(network)+"/connect", body, nil)
}

// DisconnectNetwork disconnects container from network (on this daemon).
func (c *Client) DisconnectNetwork(network, container string, force bool) error {
	body := struct {
		Container string `json:"Container"`
		Force     bool   `json:"Force"`
	}{container, force}
	return c.Do(http.MethodPost, "/networks/"+url.PathEscape(network)+"/disconnect", body, nil)
}

// Container is a container as GET /containers/{id}/json describes it (the fields vxsafe reads).
type Container struct {
	ID     string `json:"Id"`
	Name   string `json:"Name"` // with its leading "/"
	Config struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	HostConfig struct {
		NetworkMode string `json:"NetworkMode"` // the network of docker run --network
	} `json:"HostConfig"`
	NetworkSettings struct {
		Networks map[string]struct {
			NetworkID string   `json:"NetworkID"`
			Aliases   []string `json:"Aliases"`
		} `json:"Networks"`
	} `json:"NetworkSettings"`
}

// ContainerInspect reads container id.
func (c *Client) ContainerInspect(id string) (Container, error) {
	var out Container
	err := c.Get("/containers/"+url.PathEscape(id)+"/json", &out)
	return out, err
}
