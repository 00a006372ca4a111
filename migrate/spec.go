package migrate

import (
	"encoding/json"
	"fmt"
	"strings"
)

// attachment is a service's attachment to a network (swarm.NetworkAttachmentConfig).
type attachment struct {
	Target     string            `json:"Target"`
	Aliases    []string          `json:"Aliases,omitempty"`
	DriverOpts map[string]string `json:"DriverOpts,omitempty"`
}

// spec is a service's spec as the daemon sent it: only the networks are changed, every other field goes
// back as it came, also those this package does not know.
type spec struct {
	raw map[string]json.RawMessage
	tt  map[string]json.RawMessage // TaskTemplate
}

// specFields are the fields of a spec the plan reads.
type specFields struct {
	Name   string            `json:"Name"`
	Labels map[string]string `json:"Labels"`
	Mode   struct {
		Replicated *struct {
			Replicas *uint64 `json:"Replicas"`
		} `json:"Replicated"`
		Global        *struct{} `json:"Global"`
		ReplicatedJob *struct{} `json:"ReplicatedJob"`
		GlobalJob     *struct{} `json:"GlobalJob"`
	} `json:"Mode"`
	UpdateConfig *struct {
		Order         string `json:"Order"`
		FailureAction string `json:"FailureAction"`
	} `json:"UpdateConfig"`
	EndpointSpec *struct {
		Mode string `json:"Mode"`
	} `json:"EndpointSpec"`
}

func parseSpec(b json.RawMessage) (*spec, error) {
	s := &spec{}
	if err := json.Unmarshal(b, &s.raw); err != nil {
		return nil, fmt.Errorf("decoding the spec: %w", err)
	}
	if s.raw == nil {
		s.raw = map[string]json.RawMessage{}
	}
	if t, ok := s.raw["TaskTemplate"]; ok {
		if err := json.Unmarshal(t, &s.tt); err != nil {
			return nil, fmt.Errorf("decoding the spec's TaskTemplate: %w", err)
		}
	}
	if s.tt == nil {
		s.tt = map[string]json.RawMessage{}
	}
	return s, nil
}

func (s *spec) fields() specFields {
	var f specFields
	b, _ := json.Marshal(s.raw)
	_ = json.Unmarshal(b, &f)
	return f
}

// networks are the service's attachments: TaskTemplate.Networks, then the deprecated Spec.Networks.
func (s *spec) networks() []attachment {
	var out, old []attachment
	if b, ok := s.tt["Networks"]; ok {
		_ = json.Unmarshal(b, &out)
	}
	if b, ok := s.raw["Networks"]; ok {
		_ = json.Unmarshal(b, &old)
	}
	return append(out, old...)
}

// setNetworks puts nets in TaskTemplate.Networks and drops the deprecated Spec.Networks (as `docker
// service update --network-add` does).
func (s *spec) setNetworks(nets []attachment) {
	b, _ := json.Marshal(nets)
	s.tt["Networks"] = b
	delete(s.raw, "Networks")
	t, _ := json.Marshal(s.tt)
	s.raw["TaskTemplate"] = t
}

func (s *spec) marshal() json.RawMessage {
	b, _ := json.Marshal(s.raw)
	return b
}

// netRef is a network as a spec or a task may name it.
type netRef struct{ ID, Name string }

// names tells whether target (a spec's Target: an ID, an ID's prefix or a name) is this network.
func (n netRef) names(target string) bool {
	if target == "" || n.ID == "" {
		return false
	}
	return target == n.ID || target == n.Name || (len(target) >= 12 && strings.HasPrefix(n.ID, target))
}

// find returns the attachment of nets to n, if any.
func find(nets []attachment, n netRef) (attachment, bool) {
	for _, a := range nets {
		if n.names(a.Target) {
			return a, true
		}
	}
	return attachment{}, false
}

// withNetwork adds an attachment to to, with the aliases of the attachment to from (the driver options
// are the old driver's and are not carried over).
func withNetwork(nets []attachment, from, to netRef) []attachment {
	if _, ok := find(nets, to); ok {
		return nets
	}
	a := attachment{Target: to.ID}
	if f, ok := find(nets, from); ok {
		a.Aliases = append([]string(nil), f.Aliases...)
	}
	return append(append([]attachment(nil), nets...), a)
}

// withoutNetwork drops the attachments to n.
func withoutNetwork(nets []attachment, n netRef) []attachment {
	out := []attachment{}
	for _, a := range nets {
		if !n.names(a.Target) {
			out = append(out, a)
		}
	}
	return out
}
