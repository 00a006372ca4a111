package engine

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// versioned emulates a Docker daemon's API versioning: every route is served both unversioned and
// under /v{version} (api/server/server.go CreateMux in 20.10 and daemon/server/server.go in moby v2),
// an unversioned request is served at the daemon's default version, and a versioned one outside
// [min, default] is refused as the version middleware does (daemon/server/middleware/version.go).
func versioned(def, min string, paths *[]string, mu *sync.Mutex) http.Handler {
	re := regexp.MustCompile(`^/v([0-9.]+)(/.*)$`)
	answers := map[string]string{
		"/info":         `{"Swarm":{"Cluster":{"DataPathPort":4789},"RemoteManagers":[{"NodeID":"n1","Addr":"10.0.0.1:2377"}]}}`,
		"/networks":     `[{"Name":"web","Id":"abc","Driver":"vxsafe/overlay:latest","Scope":"swarm","Options":{"k":"v"}}]`,
		"/networks/abc": `{"Name":"web","Id":"abc","Containers":{"c1":{"Name":"x"}}}`,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*paths = append(*paths, r.URL.Path)
		mu.Unlock()
		path, version := r.URL.Path, def
		if m := re.FindStringSubmatch(path); m != nil {
			version, path = m[1], m[2]
		}
		w.Header().Set("Api-Version", def)
		if less(version, min) {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"message": fmt.Sprintf(
				"client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version", version, min)})
			return
		}
		if less(def, version) {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"message": fmt.Sprintf(
				"client version %s is too new. Maximum supported API version is %s", version, def)})
			return
		}
		a, ok := answers[path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"page not found"}`))
			return
		}
		w.Write([]byte(a))
	})
}

// less compares API versions "1.41" < "1.5" numerically, part by part.
func less(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

// The client asks unversioned paths, which every daemon serves at its own default (newest) version and
// never refuses for being too old: it works on 20.10 (API 1.41), on the current engine (1.56, minimum
// 1.40 by default) and on one whose operator raised min-api-version to its maximum — where a pinned
// /v1.41 would be refused.
func TestUnversionedPathsOnEveryEngine(t *testing.T) {
	for _, e := range []struct{ name, def, min string }{
		{"docker 20.10", "1.41", "1.12"},
		{"moby v2 default", "1.56", "1.40"},
		{"moby v2, min-api-version 1.56", "1.56", "1.56"},
	} {
		var mu sync.Mutex
		var paths []string
		sock := daemon(t, versioned(e.def, e.min, &paths, &mu))
		c, err := New("unix://"+sock, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := c.SwarmManagers(); err != nil || strings.Join(m, ",") != "10.0.0.1" {
			t.Errorf("%s: SwarmManagers() = %q, %v", e.name, m, err)
		}
		if nets, err := c.Networks(); err != nil || len(nets) != 1 || nets[0].Driver != "vxsafe/overlay:latest" || nets[0].Options["k"] != "v" {
			t.Errorf("%s: Networks() = %+v, %v", e.name, nets, err)
		}
		if n, err := c.Network("abc"); err != nil || len(n.Containers) != 1 {
			t.Errorf("%s: Network(abc) = %+v, %v", e.name, n, err)
		}
		mu.Lock()
		for _, p := range paths {
			if strings.HasPrefix(p, "/v") {
				t.Errorf("%s: the client asked the versioned path %s", e.name, p)
			}
		}
		mu.Unlock()
		// What a client pinned to 1.41 would get.
		var info Info
		err = c.Get("/v1.41/info", &info)
		if tooOld := less("1.41", e.min); tooOld != (err != nil) || (tooOld && !strings.Contains(err.Error(), "too old")) {
			t.Errorf("%s: GET /v1.41/info: %v", e.name, err)
		}
	}
}
