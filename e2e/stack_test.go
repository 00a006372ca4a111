package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vxsafe/overlay/e2e/cluster"
)

// stackCompose is the README's compose snippet put to use: a stack whose network is a vxsafe network,
// with a web service (busybox httpd, answering GET /hostname with the replica's hostname) and a client
// service, two replicas each, one per node. Services use endpoint_mode dnsrr: in VIP mode Docker makes
// the load-balancer endpoint only for its own overlay driver.
const stackCompose = `version: "3.8"
services:
  web:
    image: %[1]s
    command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"]
    networks: [appnet]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement:
        max_replicas_per_node: 1
  client:
    image: %[1]s
    command: ["sleep", "86400"]
    stop_grace_period: 1s
    networks: [appnet]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement:
        max_replicas_per_node: 1
networks:
  appnet:
    driver: %[2]s
`

// testStack deploys stackCompose on the manager of c (vxsafe installed on every node), checks that each
// client reaches both web replicas, on its own node and across, by service name and by task, then runs
// `docker stack rm` and checks that neither the network nor any device or endpoint interface of it is
// left on any node.
func testStack(t *testing.T, c *cluster.Cluster) {
	m := c.Manager()
	dir := t.TempDir()
	file := filepath.Join(dir, "compose.yml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(stackCompose, c.Image(), pluginName)), 0o644); err != nil {
		t.Fatal(err)
	}
	docker(t, m, "stack", "deploy", "--resolve-image", "never", "-c", file, "app")
	stackRemoved := false
	t.Cleanup(func() {
		if !stackRemoved {
			m.Docker(ctxT(t, time.Minute), "stack", "rm", "app")
		}
	})
	netID, vni := networkVNI(t, m, "app_appnet")
	dev := vxName(vni, netID)

	// Every task running: one web and one client container per node.
	clients := map[*cluster.Node]string{}
	poll(t, 90*time.Second, "stack app: one web and one client task on every node", func() error {
		for _, n := range c.Nodes() {
			for _, svc := range []string{"web", "client"} {
				out, err := n.Docker(ctxT(t, 30*time.Second), "ps", "-q", "--filter", "label=com.docker.swarm.service.name=app_"+svc)
				if err != nil {
					return err
				}
				if ids := strings.Fields(out); len(ids) != 1 {
					return fmt.Errorf("node %s: %d running tasks of app_%s", n.Name, len(ids), svc)
				} else if svc == "client" {
					clients[n] = ids[0]
				}
			}
		}
		return nil
	})
	for _, n := range c.Nodes() {
		if !hasLink(n, dev) {
			t.Fatalf("node %s: no vxsafe device %s for the stack's network", n.Name, dev)
		}
	}

	get := func(n *cluster.Node, ctr, host string) (string, error) {
		out, err := n.Docker(ctxT(t, 30*time.Second), "exec", ctr, "sh", "-c",
			fmt.Sprintf(`printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 5 %s 8080 | tail -n 1`, host))
		return strings.TrimSpace(out), err
	}
	for _, n := range c.Nodes() {
		ctr := clients[n]
		var ips []string
		poll(t, 30*time.Second, n.Name+": tasks.web resolves to both replicas", func() error {
			out, err := n.Docker(ctxT(t, 30*time.Second), "exec", ctr, "nslookup", "tasks.web")
			if err != nil {
				return err
			}
			ips = nil
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(line, "Address") && !strings.Contains(line, "127.0.0.11") {
					ips = append(ips, strings.TrimSuffix(f[len(f)-1], ":53"))
				}
			}
			if len(ips) != 2 {
				return fmt.Errorf("tasks.web: %v", ips)
			}
			return nil
		})
		hosts := map[string]bool{}
		for _, ip := range ips {
			var h string
			poll(t, 30*time.Second, fmt.Sprintf("%s: client reaches web replica %s", n.Name, ip), func() (err error) {
				h, err = get(n, ctr, ip)
				if err == nil && h == "" {
					err = fmt.Errorf("empty answer")
				}
				return err
			})
			hosts[h] = true
		}
		if len(hosts) != 2 {
			t.Fatalf("node %s: the two web replicas answered with hostnames %v, want two different ones", n.Name, hosts)
		}
		byName, err := get(n, ctr, "web")
		if err != nil || !hosts[byName] {
			t.Fatalf("node %s: client to service name web: %q %v", n.Name, byName, err)
		}
		names := make([]string, 0, 2)
		for h := range hosts {
			names = append(names, h)
		}
		sort.Strings(names)
		t.Logf("node %s: client reached web replicas %v by task address, and %s by service name", n.Name, names, byName)
	}

	docker(t, m, "stack", "rm", "app")
	stackRemoved = true
	poll(t, 90*time.Second, "docker stack rm app: nothing left on any node", func() error {
		for _, n := range c.Nodes() {
			out, err := n.Docker(ctxT(t, 30*time.Second), "ps", "-aq", "--filter", "label=com.docker.stack.namespace=app")
			if err != nil {
				return err
			}
			if out != "" {
				return fmt.Errorf("node %s: containers of the stack remain: %s", n.Name, strings.Join(strings.Fields(out), " "))
			}
			if out, _ := n.Docker(ctxT(t, 30*time.Second), "network", "ls", "-q", "--filter", "name=app_appnet"); out != "" {
				return fmt.Errorf("node %s: network app_appnet remains", n.Name)
			}
			if hasLink(n, dev) {
				return fmt.Errorf("node %s: device %s remains", n.Name, dev)
			}
		}
		return nil
	})
	for _, n := range c.Nodes() {
		left, err := linksWithPrefix(n, "vxe-")
		if err != nil {
			t.Fatal(err)
		}
		// The fresh-host test's two long-lived containers are on another network; their endpoint
		// interfaces are in their namespaces, not in the node's.
		if len(left) > 0 {
			t.Fatalf("node %s: endpoint interfaces left in the node's namespace: %v", n.Name, left)
		}
	}
	t.Logf("docker stack rm app: no container, network %s, device %s or endpoint interface left on %d nodes", "app_appnet", dev, len(c.Nodes()))
}
