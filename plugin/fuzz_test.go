package plugin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

var fuzzOps = []string{"Create", "Remove", "Mount", "Unmount", "Path", "Get", "List", "Capabilities"}

// FuzzHandler sends arbitrary bodies through the real handler into the real
// driver and dir backend. Whatever comes in: no panic, a JSON answer of the
// documented shape, and nothing appears outside the daemon's root or under
// it except the state file and well-named volume directories.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{
		`{"Name":"v"}`, `{"Name":"v","Opts":{"mode":"0700","uid":"1"}}`, `{"Name":"v","Opts":null}`,
		`{"Name":"../../etc"}`, `{"Name":"v","ID":"` + strings.Repeat("a", 64) + `"}`, `{"Name":"v\u0000x"}`,
		`{"Name":5}`, `[]`, `null`, ``, `{"Name":"v","Opts":{"uid":"-1","mode":"99999"}}`,
		`{"Name":"v","Opts":{"backend":"dir","sise":"1G"}}`, `{"Name":"/abs/path"}`, `{"Name":"\u202eevil"}`,
	} {
		for i := range fuzzOps {
			f.Add(uint8(i), s)
		}
	}
	parent := f.TempDir()
	root := filepath.Join(parent, "root")
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	h := NewHandler(newRealDriver(f, root), HandlerOptions{Log: log})
	f.Fuzz(func(t *testing.T, op uint8, body string) {
		name := fuzzOps[int(op)%len(fuzzOps)]
		req := httptest.NewRequest(http.MethodPost, "/VolumeDriver."+name, strings.NewReader(body))
		req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out map[string]interface{}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %q: answer %d is not JSON: %q", name, body, rec.Code, rec.Body.String())
		}
		switch rec.Code {
		case 200:
			if e, ok := out["Err"].(string); ok && e != "" {
				t.Fatalf("%s %q: 200 with Err %q", name, body, e)
			}
		case 400, 413, 500:
			if e, _ := out["Err"].(string); e == "" {
				t.Fatalf("%s %q: %d without an Err", name, body, rec.Code)
			}
		default:
			t.Fatalf("%s %q: status %d", name, body, rec.Code)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("%s %q: something appeared beside the root: %v", name, body, ents)
		}
		ents, _ := os.ReadDir(filepath.Join(root, "dir"))
		for _, e := range ents {
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") && !strings.HasPrefix(e.Name(), ".stowage") {
				t.Fatalf("%s %q: unexpected entry %q in the dir backend", name, body, e.Name())
			}
		}
	})
}
