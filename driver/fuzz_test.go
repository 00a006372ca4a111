package driver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vxsafe/overlay/store"
)

// Methods that do no kernel work: the fuzzer drives the real decoding, validation and state code.
var fuzzMethods = []string{"AllocateNetwork", "CreateNetwork", "CreateEndpoint", "EndpointOperInfo",
	"FreeNetwork", "DiscoverNew", "DiscoverDelete", "GetCapabilities"}

func FuzzHandler(f *testing.F) {
	f.Add(uint8(0), []byte(`{"NetworkID":"n1","Options":{"com.docker.network.driver.overlay.vxlanid_list":"4100"}}`))
	f.Add(uint8(1), []byte(`{"NetworkID":"n1","Options":{"com.docker.network.generic":{"com.docker.network.driver.overlay.vxlanid_list":"4100","com.docker.network.driver.mtu":"1400"}},"IPv4Data":[{"Pool":"10.0.1.0/24","Gateway":"10.0.1.1/24"}]}`))
	f.Add(uint8(2), []byte(`{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.0.1.5/24"}}`))
	f.Add(uint8(5), []byte(`{"DiscoveryType":1,"DiscoveryData":{"Address":"192.168.1.2","Self":true}}`))
	f.Add(uint8(1), []byte(`{"NetworkID":"../x","Options":{"com.docker.network.generic":7}}`))
	f.Add(uint8(2), []byte(`[1,2,3]`))
	logger, _ := test.NewNullLogger()
	st, err := store.Open(filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	drv, err := New(Config{Store: st, VNIMin: 1048576, VNIMax: 1049576, Log: logrus.NewEntry(logger)})
	if err != nil {
		f.Fatal(err)
	}
	h := Handler(drv, logrus.NewEntry(logger), nil)
	f.Fuzz(func(t *testing.T, m uint8, body []byte) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		req := httptest.NewRequest(http.MethodPost, "/NetworkDriver."+method, strings.NewReader(string(body)))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK:
		case http.StatusInternalServerError:
			var e network.ErrorResponse
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Err == "" {
				t.Fatalf("%s: error answer without a message: %q", method, w.Body.String())
			}
			if strings.Contains(e.Err, "internal error") {
				t.Fatalf("%s panicked: %s", method, e.Err)
			}
		default:
			t.Fatalf("%s: status %d", method, w.Code)
		}
	})
}
