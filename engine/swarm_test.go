package engine

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Writes send their JSON body to unversioned paths, and a refusal carries the daemon's own message.
func TestWritesAndErrors(t *testing.T) {
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("/services/s1/update", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+string(b))
		w.Write([]byte(`{"Warnings":["w1"]}`))
	})
	mux.HandleFunc("/networks/create", func(w http.ResponseWriter, r *http.Request) {
		var req NetworkCreate
		json.NewDecoder(r.Body).Decode(&req)
		if req.Name == "taken" {
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"message":"network with name taken already exists"}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"Id":"n2"}`))
	})
	mux.HandleFunc("/networks/n1", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/tasks", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, "GET "+r.URL.Query().Get("filters"))
		w.Write([]byte(`[{"ID":"t1","Spec":{"NetworkAttachmentSpec":{"ContainerID":"c1"}},"NetworksAttachments":[{"Network":{"ID":"n1"}}]}]`))
	})
	c, err := New("unix://"+daemon(t, mux), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := c.UpdateService("s1", 7, json.RawMessage(`{"Name":"web"}`), true); err != nil || len(w) != 1 {
		t.Errorf("UpdateService: %v, %v", w, err)
	}
	if id, err := c.CreateNetwork(NetworkCreate{Name: "new", Driver: "d"}); err != nil || id != "n2" {
		t.Errorf("CreateNetwork: %q, %v", id, err)
	}
	_, err = c.CreateNetwork(NetworkCreate{Name: "taken"})
	if err == nil || !strings.Contains(err.Error(), `create network "taken"`) || !strings.Contains(err.Error(), "already exists") || strings.Contains(err.Error(), `{"message"`) {
		t.Errorf("CreateNetwork(taken): %v", err)
	}
	if err := c.RemoveNetwork("n1"); err != nil {
		t.Error(err)
	}
	tasks, err := c.Tasks(map[string][]string{"service": {"s1"}})
	if err != nil || len(tasks) != 1 || tasks[0].Spec.NetworkAttachmentSpec.ContainerID != "c1" || tasks[0].Networks()[0] != "n1" {
		t.Errorf("Tasks: %+v, %v", tasks, err)
	}
	want := []string{`POST /services/s1/update?rollback=previous&version=7 {"Name":"web"}`, "DELETE /networks/n1", `GET {"service":["s1"]}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
