package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/store"
)

// facts adds Status entries, overriding the driver's own where a backend
// says so, and reports usage as Options ask.
type facts struct{ *fake }

func (facts) Status(vol *backend.Volume) map[string]interface{} {
	switch vol.Options["facts"] {
	case "override":
		return map[string]interface{}{"mounts": "the backend's own count", "backend": nil, "z": true}
	case "many":
		m := map[string]interface{}{}
		for i := 0; i < 20; i++ {
			m[fmt.Sprintf("fact%02d", 19-i)] = i
		}
		return m
	case "odd":
		return map[string]interface{}{"<&>": "é\u2028", "nested": map[string]interface{}{"b": []string{"x"}, "a": 1.5}, "u": uint64(1) << 63, "i": int64(-1)}
	case "unencodable":
		return map[string]interface{}{"f": func() {}}
	}
	return nil
}

func (facts) Usage(vol *backend.Volume) (backend.Usage, error) {
	switch vol.Options["usage"] {
	case "limited":
		return backend.Usage{Limit: 1 << 40, Used: 12345}, nil
	case "unlimited":
		return backend.Usage{Used: 7}, nil
	}
	return backend.Usage{}, errors.New("no cheap usage")
}

// AppendGet writes exactly what the plugin wrote for Get's response
// (encoding/json's bytes), for every shape of Status: the driver's own
// keys, a backend's that override them or outnumber the stack's room,
// usage, stale and live mounts, a disabled backend, names and options that
// need escaping.
func TestAppendGetWritesWhatGetAnswers(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), store.FileName))
	t.Cleanup(func() { st.Close() })
	f := newFake()
	mod := backend.Module{ID: "fake", New: func(backend.Env) (backend.Backend, error) { return f, nil }}
	d, err := New(Config{Store: st, Backends: map[string]backend.Instance{
		"fake":  {Module: mod, Backend: f},
		"facts": {Module: mod, Backend: facts{f}},
	}, DefaultBackend: "fake", BootID: "boot-1", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2024, 2, 29, 23, 59, 58, 0, time.UTC)
	live := store.Mount{Count: 2, Boot: "boot-1", Since: at}
	stale := store.Mount{Count: 1, Boot: "boot-0", Since: at}
	vols := []*store.Volume{
		{Name: "plain", Backend: "fake", CreatedAt: at},
		{Name: "opts", Backend: "fake", Options: map[string]string{"mode": "0755", "uid": "1000", "a<b": "&\"\\"}, CreatedAt: at},
		{Name: "empty-opts", Backend: "fake", Options: map[string]string{}, CreatedAt: at},
		{Name: "mounted", Backend: "fake", CreatedAt: at, Mounts: map[string]store.Mount{mountID(1): live, mountID(2): stale}},
		{Name: "only-stale", Backend: "fake", CreatedAt: at, Mounts: map[string]store.Mount{mountID(3): stale}},
		{Name: "gone", Backend: "disabled", Options: map[string]string{"k": "v"}, CreatedAt: at, Mounts: map[string]store.Mount{mountID(4): stale}},
		{Name: "override", Backend: "facts", Options: map[string]string{"facts": "override", "usage": "limited"}, CreatedAt: at},
		{Name: "many", Backend: "facts", Options: map[string]string{"facts": "many", "usage": "unlimited"}, CreatedAt: at, Mounts: map[string]store.Mount{mountID(5): live}},
		{Name: "odd", Backend: "facts", Options: map[string]string{"facts": "odd"}, CreatedAt: at.Add(-time.Hour * 24 * 365 * 30)},
	}
	for _, v := range vols {
		if err := st.Create(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range vols {
		res, err := d.Get(&volume.GetRequest{Name: v.Name})
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(res); err != nil {
			t.Fatal(err)
		}
		got, ok, err := d.AppendGet([]byte("kept"), &volume.GetRequest{Name: v.Name})
		if err != nil || !ok || string(got) != "kept"+want.String() {
			t.Errorf("%s: AppendGet wrote (ok %v, err %v)\n%s\nGet's answer is\nkept%s", v.Name, ok, err, got, want.String())
		}
	}

	// A Status value encoding/json refuses: AppendGet declines, as the
	// plugin's encoder did.
	if err := st.Create(&store.Volume{Name: "unencodable", Backend: "facts", Options: map[string]string{"facts": "unencodable"}, CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	if b, ok, err := d.AppendGet(nil, &volume.GetRequest{Name: "unencodable"}); ok || err != nil || b != nil {
		t.Errorf("AppendGet of an unencodable Status: %q ok %v err %v", b, ok, err)
	}

	// Refusals are Get's, word for word.
	for _, name := range []string{"nosuch", "../x", ""} {
		_, gerr := d.Get(&volume.GetRequest{Name: name})
		_, ok, err := d.AppendGet(nil, &volume.GetRequest{Name: name})
		if gerr == nil || err == nil || err.Error() != gerr.Error() || !ok {
			t.Errorf("%q: AppendGet's error %v, Get's %v", name, err, gerr)
		}
	}
}

func BenchmarkAppendGet(b *testing.B) {
	st, err := store.Open(filepath.Join(b.TempDir(), store.FileName), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	f := newFake()
	mod := backend.Module{ID: "fake", New: func(backend.Env) (backend.Backend, error) { return f, nil }}
	d, err := New(Config{Store: st, Backends: map[string]backend.Instance{"fake": {Module: mod, Backend: f}}, DefaultBackend: "fake", BootID: "boot-1", Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Create(&store.Volume{Name: "v0001234", Backend: "fake", Options: map[string]string{"from_mounted": "false", "mode": "0755"}, CreatedAt: time.Now().UTC().Truncate(time.Second)}); err != nil {
		b.Fatal(err)
	}
	req := &volume.GetRequest{Name: "v0001234"}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := d.AppendGet(buf[:0], req); err != nil {
			b.Fatal(err)
		}
	}
}
