package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/store"
)

type fakeList []*store.Volume

func (f fakeList) Scan(fn func(*store.Volume) error) error {
	for _, v := range f {
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:9323", "[::1]:1", "localhost:80", "127.1.2.3:5"} {
		if err := CheckLoopback(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:9", ":9323", "10.0.0.1:9", "example.com:9", "127.0.0.1"} {
		if err := CheckLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestMetricsAndProbes(t *testing.T) {
	m := New(fakeList{
		{Name: "a", Backend: "dir", Mounts: map[string]store.Mount{"x": {Count: 2}}},
		{Name: "b", Backend: "dir"}, {Name: "c", Backend: "tmpfs", Mounts: map[string]store.Mount{"y": {Count: 1}}},
	})
	m.ObserveRequest("Mount", nil, time.Millisecond)
	m.ObserveRequest("Mount", errors.New("x"), time.Millisecond)
	m.ObserveCommit(time.Millisecond)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func(p string) (int, string) {
		r, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if c, _ := get("/readyz"); c != 503 {
		t.Errorf("/readyz before ready = %d", c)
	}
	m.SetReady(true)
	if c, _ := get("/readyz"); c != 200 {
		t.Errorf("/readyz when ready = %d", c)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		`stowage_requests_total{op="Mount",result="ok"} 1`, `stowage_requests_total{op="Mount",result="error"} 1`,
		`stowage_volumes{backend="dir"} 2`, `stowage_volumes{backend="tmpfs"} 1`, `stowage_active_mounts 3`,
		`stowage_state_commit_duration_seconds_count 1`, `stowage_request_duration_seconds_count{op="Mount"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
