package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/store"
)

type fakeStore struct {
	mu    sync.Mutex
	vols  []*store.Volume
	scans atomic.Int32
}

func (f *fakeStore) Scan(fn func(*store.Volume) error) error {
	f.scans.Add(1)
	f.mu.Lock()
	vols := append([]*store.Volume(nil), f.vols...)
	f.mu.Unlock()
	for _, v := range vols {
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeStore) add(v *store.Volume) {
	f.mu.Lock()
	f.vols = append(f.vols, v)
	f.mu.Unlock()
}

type fixture struct {
	st    *fakeStore
	rec   *Recorder
	ui    *UI
	gets  atomic.Int32
	clock atomic.Int64
}

func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	f := &fixture{st: &fakeStore{}, rec: NewRecorder()}
	f.clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	for i := 0; i < n; i++ {
		f.st.add(&store.Volume{Name: fmt.Sprintf("vol-%05d", i), Backend: "dir", CreatedAt: time.Unix(1700000000, 0)})
	}
	f.ui = New(Config{
		Volumes: f.st, BootID: "boot-now", Recorder: f.rec,
		Now: func() time.Time { return time.Unix(0, f.clock.Load()) },
		Get: func(name string) (*volume.Volume, error) {
			f.gets.Add(1)
			for _, v := range f.st.vols {
				if v.Name == name {
					return &volume.Volume{Name: name, Status: map[string]interface{}{
						"backend": v.Backend, "options": v.Options, "mounts": v.ActiveMounts(),
						"size_bytes": uint64(10 << 20), "used_bytes": uint64(9 << 20), "fs": "ext4",
					}}, nil
				}
			}
			return nil, errors.New("no such volume")
		},
		Findings: func(context.Context) ([]driver.Finding, error) {
			return []driver.Finding{{Kind: driver.FindStaleMount, Volume: "vol-00001", Detail: "stale"}}, nil
		},
	})
	return f
}

// fakeListener stands for the daemon's listener on 127.0.0.1:0, whose
// Host the handler accepts.
type fakeListener struct{ net.Listener }

func (fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0} }

func (f *fixture) advance(d time.Duration) { f.clock.Add(int64(d)) }

// get asks the handler directly with the Host the listener accepts.
func (f *fixture) get(t *testing.T, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Host = "127.0.0.1:0"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.ui.Handler(Hosts(fakeListener{})).ServeHTTP(w, req)
	return w
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("%v: %s", err, w.Body)
	}
	return v
}

func TestReadOnlyAndHeaders(t *testing.T) {
	f := newFixture(t, 3)
	for _, p := range []string{"/", "/app.js", "/app.css", "/api/volumes", "/api/summary"} {
		w := f.get(t, "GET", p, nil)
		if w.Code != http.StatusOK {
			t.Errorf("GET %s: %d", p, w.Code)
		}
		h := w.Header()
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: CSP %q", p, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", p, h)
		}
		for k := range h {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("GET %s: CORS header %s", p, k)
			}
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		for _, p := range []string{"/", "/api/volumes", "/api/summary"} {
			if w := f.get(t, m, p, nil); w.Code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d, want 405", m, p, w.Code)
			}
		}
	}
	if w := f.get(t, "GET", "/api/volumes", map[string]string{"Sec-Fetch-Site": "same-site"}); w.Code != http.StatusForbidden {
		t.Errorf("a same-site (other port) fetch: %d, want 403", w.Code)
	}
	if w := f.get(t, "GET", "/api/volumes", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}); w.Code != http.StatusForbidden {
		t.Errorf("a cross-site navigation to the API: %d, want 403", w.Code)
	}
	if w := f.get(t, "GET", "/", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}); w.Code != http.StatusOK {
		t.Errorf("a link followed to the page: %d, want 200", w.Code)
	}
	if w := f.get(t, "GET", "/api/volumes", map[string]string{"Origin": "http://evil.example"}); w.Code != http.StatusForbidden {
		t.Errorf("a cross-origin fetch: %d, want 403", w.Code)
	}
	if w := f.get(t, "GET", "/nope", nil); w.Code != http.StatusNotFound {
		t.Errorf("GET /nope: %d", w.Code)
	}
}

func TestHostChecked(t *testing.T) {
	f := newFixture(t, 1)
	for host, want := range map[string]int{"127.0.0.1:0": 200, "localhost:0": 200, "evil.example:0": 403, "127.0.0.1:1": 403, "": 403} {
		req := httptest.NewRequest("GET", "/api/summary", nil)
		req.Host = host
		w := httptest.NewRecorder()
		f.ui.Handler(Hosts(fakeListener{})).ServeHTTP(w, req)
		if w.Code != want {
			t.Errorf("Host %q: %d, want %d", host, w.Code, want)
		}
	}
	// A unix socket accepts any Host: no page can reach it.
	req := httptest.NewRequest("GET", "/api/summary", nil)
	req.Host = "whatever"
	w := httptest.NewRecorder()
	f.ui.Handler(nil).ServeHTTP(w, req)
	if w.Code != 200 {
		t.Errorf("unix socket: %d", w.Code)
	}
}

func TestPagingAndFilter(t *testing.T) {
	f := newFixture(t, 1234)
	p := decode[VolumesPage](t, f.get(t, "GET", "/api/volumes?offset=1200&limit=50", nil))
	if p.Total != 1234 || p.Matched != 1234 || len(p.Volumes) != 34 || p.Volumes[0].Name != "vol-01200" {
		t.Fatalf("page: total %d matched %d rows %d first %v", p.Total, p.Matched, len(p.Volumes), p.Volumes[0].Name)
	}
	if n := f.gets.Load(); n != 34 {
		t.Errorf("%d Gets for a page of 34 rows: usage must be read only for the rows shown", n)
	}
	p = decode[VolumesPage](t, f.get(t, "GET", "/api/volumes?q=vol-0012&limit=5", nil))
	if p.Matched != 10 || len(p.Volumes) != 5 || p.Volumes[4].Name != "vol-00124" {
		t.Fatalf("filter: matched %d rows %d", p.Matched, len(p.Volumes))
	}
	p = decode[VolumesPage](t, f.get(t, "GET", "/api/volumes?limit=100000", nil))
	if len(p.Volumes) != maxLimit {
		t.Errorf("limit capped at %d rows, got %d", maxLimit, len(p.Volumes))
	}
	// The same rows again within usageTTL: no new Get.
	before := f.gets.Load()
	decode[VolumesPage](t, f.get(t, "GET", "/api/volumes?q=vol-0012&limit=5", nil))
	if f.gets.Load() != before {
		t.Errorf("usage re-read within %v", usageTTL)
	}
	f.advance(usageTTL)
	decode[VolumesPage](t, f.get(t, "GET", "/api/volumes?q=vol-0012&limit=5", nil))
	if f.gets.Load() != before+5 {
		t.Errorf("usage not re-read after %v", usageTTL)
	}
}

// The list is scanned again only after a request that may change it.
func TestRescanOnlyAfterChange(t *testing.T) {
	f := newFixture(t, 10)
	decode[VolumesPage](t, f.get(t, "GET", "/api/volumes", nil))
	scans := f.st.scans.Load()
	f.advance(5 * time.Second)
	f.rec.Observe("Get", nil, time.Millisecond)
	f.rec.Observe("List", nil, time.Millisecond)
	decode[VolumesPage](t, f.get(t, "GET", "/api/volumes", nil))
	if f.st.scans.Load() != scans {
		t.Fatal("rescanned after read-only requests")
	}
	f.st.add(&store.Volume{Name: "zz-new", Backend: "image"})
	f.rec.Observe("Create", nil, time.Millisecond)
	p := decode[VolumesPage](t, f.get(t, "GET", "/api/volumes?q=zz", nil))
	if len(p.Volumes) != 1 || p.Total != 11 {
		t.Fatalf("a created volume is not listed after its Create: %+v", p)
	}
	s := decode[Summary](t, f.get(t, "GET", "/api/summary", nil))
	if len(s.Backends) != 2 || s.Volumes != 11 {
		t.Errorf("totals: %+v", s.Backends)
	}
}

func TestSecretsNeverSent(t *testing.T) {
	f := newFixture(t, 0)
	f.st.add(&store.Volume{Name: "s", Backend: "sshfs", Options: map[string]string{
		"password": "hunter2", "identity": "/etc/stowage/id_ed25519", "api_token": "tok-SEKRIT", "SecretKey": "k-SEKRIT", "host": "h",
	}, Mounts: map[string]store.Mount{"a": {Count: 2, Boot: "boot-old"}, "b": {Count: 1, Boot: "boot-now"}}})
	w := f.get(t, "GET", "/api/volumes", nil)
	body := w.Body.String()
	for _, secret := range []string{"hunter2", "SEKRIT"} {
		if strings.Contains(body, secret) {
			t.Errorf("secret %s in the answer: %s", secret, body)
		}
	}
	p := decode[VolumesPage](t, w)
	v := p.Volumes[0]
	byName := map[string]Opt{}
	for _, o := range v.Options {
		byName[o.Name] = o
	}
	if o := byName["identity"]; o.Value != "/etc/stowage/id_ed25519" || !o.File || o.Secret {
		t.Errorf("identity (a file name) shown as %+v", o)
	}
	if o := byName["password"]; !o.Secret {
		t.Errorf("password shown as %+v", o)
	}
	if byName["host"].Value != "h" {
		t.Errorf("host shown as %+v", byName["host"])
	}
	if v.Stale != 2 || v.StaleFix != "stowage release s" {
		t.Errorf("stale %d fix %q", v.Stale, v.StaleFix)
	}
}

func TestFindingsExplained(t *testing.T) {
	f := newFixture(t, 2)
	var s Summary
	for i := 0; i < 100; i++ {
		s = decode[Summary](t, f.get(t, "GET", "/api/summary", nil))
		if s.CheckedAt != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(s.Findings) != 1 || s.Findings[0].Meaning == "" || s.Findings[0].Fix != "stowage release vol-00001   (or: stowage doctor --fix)" {
		t.Fatalf("findings: %+v", s.Findings)
	}
}

func TestRecorder(t *testing.T) {
	r := NewRecorder()
	r.tick(time.Now().Add(-2 * time.Second))
	for i := 0; i < 95; i++ {
		r.Observe("Get", nil, 300*time.Microsecond)
	}
	for i := 0; i < 5; i++ {
		r.Observe("Get", errors.New(`volume "x": no such volume`), 3*time.Millisecond)
	}
	for i := 0; i < failedKeep+5; i++ {
		r.Observe("Mount", fmt.Errorf("fail %d", i), time.Millisecond)
	}
	f := r.FailedRecent()
	if len(f) != failedKeep || f[0].Error != fmt.Sprintf("fail %d", failedKeep+4) || f[failedKeep-1].Error != "fail 5" {
		t.Fatalf("ring: %d kept, newest %q, oldest %q", len(f), f[0].Error, f[len(f)-1].Error)
	}
	for _, x := range f {
		if x.Op == "Get" {
			t.Error("a routine 'no such volume' Get is listed as failed")
		}
	}
	s := r.Series(time.Now())
	pts := s["Get"]
	if len(pts) != 1 || pts[0].Rate < 40 || pts[0].Rate > 60 || pts[0].P50 > 0.0005 || pts[0].P99 < 0.0025 || pts[0].P99 > 0.005 {
		t.Fatalf("Get: %+v", pts)
	}
	if r.Changes() != failedKeep+5 {
		t.Errorf("changes %d", r.Changes())
	}
}
