package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// registry is a minimal in-memory Docker registry (HTTP API v2), enough for `docker plugin push` and
// `docker plugin install/upgrade` to go through it: no registry image exists on a machine without one,
// and `docker plugin upgrade` only takes its new version from a registry. dockerd talks plain HTTP to a
// registry on 127.0.0.0/8 without any --insecure-registry setting, so tests serve it on each node's
// loopback (inside the node's network namespace).
type registry struct {
	mu        sync.Mutex
	blobs     map[string][]byte           // digest -> content
	manifests map[string]registryManifest // name:reference -> manifest
	uploads   map[string]*strings.Builder // upload id -> data so far
}

type registryManifest struct {
	mediaType string
	body      []byte
}

func newRegistry() *registry {
	return &registry{blobs: map[string][]byte{}, manifests: map[string]registryManifest{}, uploads: map[string]*strings.Builder{}}
}

var (
	reBlob     = regexp.MustCompile(`^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$`)
	reUploads  = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/?$`)
	reUpload   = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/([0-9a-f]{32})$`)
	reManifest = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (r *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := req.URL.Path
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case p == "/v2/" || p == "/v2":
		w.WriteHeader(http.StatusOK)
	case reUploads.MatchString(p) && req.Method == http.MethodPost:
		m := reUploads.FindStringSubmatch(p)
		var b [16]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		r.uploads[id] = &strings.Builder{}
		w.Header().Set("Location", "/v2/"+m[1]+"/blobs/uploads/"+id)
		w.Header().Set("Docker-Upload-UUID", id)
		w.Header().Set("Range", "0-0")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
	case reUpload.MatchString(p):
		m := reUpload.FindStringSubmatch(p)
		up, ok := r.uploads[m[2]]
		if !ok {
			http.Error(w, "unknown upload", http.StatusNotFound)
			return
		}
		data, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		up.Write(data)
		switch req.Method {
		case http.MethodPatch:
			w.Header().Set("Location", p)
			w.Header().Set("Docker-Upload-UUID", m[2])
			w.Header().Set("Range", fmt.Sprintf("0-%d", max(up.Len()-1, 0)))
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusAccepted)
		case http.MethodPut:
			content := []byte(up.String())
			want := req.URL.Query().Get("digest")
			if got := digestOf(content); got != want {
				http.Error(w, fmt.Sprintf("digest %s, want %s", got, want), http.StatusBadRequest)
				return
			}
			r.blobs[want] = content
			delete(r.uploads, m[2])
			w.Header().Set("Location", "/v2/"+m[1]+"/blobs/"+want)
			w.Header().Set("Docker-Content-Digest", want)
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusCreated)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	case reBlob.MatchString(p):
		m := reBlob.FindStringSubmatch(p)
		b, ok := r.blobs[m[2]]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Docker-Content-Digest", m[2])
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if req.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
			return
		}
		_, _ = w.Write(b)
	case reManifest.MatchString(p):
		m := reManifest.FindStringSubmatch(p)
		key := m[1] + ":" + m[2]
		switch req.Method {
		case http.MethodPut:
			body, err := io.ReadAll(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mf := registryManifest{mediaType: req.Header.Get("Content-Type"), body: body}
			d := digestOf(body)
			r.manifests[key] = mf
			r.manifests[m[1]+":"+d] = mf
			w.Header().Set("Location", "/v2/"+m[1]+"/manifests/"+d)
			w.Header().Set("Docker-Content-Digest", d)
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusCreated)
		case http.MethodGet, http.MethodHead:
			mf, ok := r.manifests[key]
			if !ok {
				http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`, http.StatusNotFound)
				return
			}
			w.Header().Set("Content-Type", mf.mediaType)
			w.Header().Set("Docker-Content-Digest", digestOf(mf.body))
			w.Header().Set("Content-Length", strconv.Itoa(len(mf.body)))
			if req.Method == http.MethodHead {
				w.WriteHeader(http.StatusOK)
				return
			}
			_, _ = w.Write(mf.body)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}
