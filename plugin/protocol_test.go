package plugin

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/backend/dir"
	"github.com/stowage/stowage/internal/store"
)

// newRealDriver is the real driver with the dir backend on a temp root.
func newRealDriver(t testing.TB, root string) *driver.Driver {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	st, err := store.Open(filepath.Join(root, store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	insts, err := backend.NewRegistry(dir.Module).Provision(root, []string{dir.ID}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	d, err := driver.New(driver.Config{Store: st, Backends: insts, DefaultBackend: dir.ID, BootID: "boot-test", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dockerdClient speaks exactly as dockerd does: POST, the plugin Accept
// header, no request Content-Type, Host plugin.moby.localhost.
type dockerdClient struct {
	t    *testing.T
	http *http.Client
}

func newDockerdClient(t *testing.T, sock string) *dockerdClient {
	return &dockerdClient{t: t, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

func (c *dockerdClient) post(path, body string) (int, map[string]interface{}, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://plugin.moby.localhost"+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s: %v", path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]interface{}
	if err := json.Unmarshal(raw, &out); err != nil {
		c.t.Fatalf("%s answered %d with non-JSON %q", path, res.StatusCode, raw)
	}
	return res.StatusCode, out, res.Header
}

func serveOnTempSocket(t *testing.T) (*dockerdClient, string) {
	t.Helper()
	root := t.TempDir()
	sock := filepath.Join(t.TempDir(), "p.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	srv := NewServer(NewHandler(newRealDriver(t, root), HandlerOptions{Log: log}), log)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(5 * time.Second) })
	return newDockerdClient(t, sock), root
}

func TestProtocolAsDockerdSpeaksIt(t *testing.T) {
	c, root := serveOnTempSocket(t)

	st, body, hdr := c.post("/Plugin.Activate", "")
	if st != 200 || !strings.Contains(hdr.Get("Content-Type"), "application/vnd.docker.plugins.v1") {
		t.Fatalf("Activate: %d %v %v", st, body, hdr)
	}
	if impl, _ := body["Implements"].([]interface{}); len(impl) != 1 || impl[0] != "VolumeDriver" {
		t.Fatalf("Activate implements %v", body["Implements"])
	}
	st, body, _ = c.post("/VolumeDriver.Capabilities", "{}")
	if caps, _ := body["Capabilities"].(map[string]interface{}); st != 200 || caps["Scope"] != "local" {
		t.Fatalf("Capabilities: %d %v", st, body)
	}
	// docker volume create: Get (no such volume), then Create.
	st, body, _ = c.post("/VolumeDriver.Get", `{"Name":"pv"}`)
	if st == 200 || !strings.Contains(body["Err"].(string), "no such volume") {
		t.Fatalf("Get of unknown: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Create", `{"Name":"pv","Opts":{"mode":"0750"}}`)
	if st != 200 || body["Err"] != nil && body["Err"] != "" {
		t.Fatalf("Create: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Create", `{"Name":"pv2","Opts":null}`)
	if st != 200 {
		t.Fatalf("Create with Opts null: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Get", `{"Name":"pv"}`)
	vol, _ := body["Volume"].(map[string]interface{})
	if st != 200 || vol == nil {
		t.Fatalf("Get: %d %v", st, body)
	}
	if _, err := time.Parse(time.RFC3339, vol["CreatedAt"].(string)); err != nil {
		t.Fatalf("CreatedAt %v is not RFC 3339: %v", vol["CreatedAt"], err)
	}
	if vol["Mountpoint"] != filepath.Join(root, "dir", "pv") {
		t.Fatalf("Mountpoint %v", vol["Mountpoint"])
	}
	if status, _ := vol["Status"].(map[string]interface{}); status["backend"] != "dir" {
		t.Fatalf("Status %v", vol["Status"])
	}
	id := strings.Repeat("ab", 32)
	st, body, _ = c.post("/VolumeDriver.Mount", `{"Name":"pv","ID":"`+id+`"}`)
	if st != 200 || body["Mountpoint"] != filepath.Join(root, "dir", "pv") {
		t.Fatalf("Mount: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Path", `{"Name":"pv"}`)
	if st != 200 || body["Mountpoint"] != filepath.Join(root, "dir", "pv") {
		t.Fatalf("Path: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.List", `{}`)
	if vols, _ := body["Volumes"].([]interface{}); st != 200 || len(vols) != 2 {
		t.Fatalf("List: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Remove", `{"Name":"pv"}`)
	if st != 500 || !strings.Contains(body["Err"].(string), "in use") {
		t.Fatalf("Remove of a mounted volume: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Unmount", `{"Name":"pv","ID":"`+id+`"}`)
	if st != 200 {
		t.Fatalf("Unmount: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Unmount", `{"Name":"gone","ID":"`+id+`"}`)
	if st != 200 {
		t.Fatalf("Unmount of an unknown volume must be accepted: %d %v", st, body)
	}
	st, body, _ = c.post("/VolumeDriver.Remove", `{"Name":"pv"}`)
	if st != 200 {
		t.Fatalf("Remove: %d %v", st, body)
	}
	if _, err := os.Stat(filepath.Join(root, "dir", "pv")); !os.IsNotExist(err) {
		t.Fatalf("data still there after Remove: %v", err)
	}
}

func TestProtocolRefusals(t *testing.T) {
	c, _ := serveOnTempSocket(t)
	cases := []struct {
		path, body string
		status     int
		want       string
	}{
		{"/VolumeDriver.Create", `{"Name":`, 400, "not a valid Create request"},
		{"/VolumeDriver.Create", `{"Name":5}`, 400, "not a valid Create request"},
		{"/VolumeDriver.Create", `{"Name":"x","Opts":{"a":1}}`, 400, "not a valid Create request"},
		{"/VolumeDriver.Create", `{"Name":"x","Opts":{"nope":"1"}}`, 500, "unknown option"},
		{"/VolumeDriver.Create", `{"Name":"../x"}`, 500, "invalid"},
		{"/VolumeDriver.Mount", `{"Name":"x","ID":""}`, 500, "mount ID is empty"},
		{"/VolumeDriver.Frobnicate", `{}`, 404, "unknown endpoint"},
		{"/", ``, 404, "unknown endpoint"},
	}
	for _, cs := range cases {
		st, body, _ := c.post(cs.path, cs.body)
		if st != cs.status || !strings.Contains(body["Err"].(string), cs.want) {
			t.Errorf("%s %s: %d %v, want %d with %q", cs.path, cs.body, st, body, cs.status, cs.want)
		}
	}
	big := `{"Name":"x","Opts":{"k":"` + strings.Repeat("a", MaxBodyBytes+10) + `"}}`
	st, body, _ := c.post("/VolumeDriver.Create", big)
	if st != 413 || !strings.Contains(body["Err"].(string), "larger than") {
		t.Errorf("oversized body: %d %v", st, body)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://plugin.moby.localhost/VolumeDriver.List", nil)
	res, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 405 || res.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow=%q", res.StatusCode, res.Header.Get("Allow"))
	}
}

// blockingWriter holds every write until release is closed.
type blockingWriter struct {
	writing chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.writing) })
	<-b.release
	return len(p), nil
}

// The client has its answer, with its length, before the request's log line
// is written: a slow log costs the daemon, not the caller.
func TestAnswerGoesOutBeforeTheLogLine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	out := &blockingWriter{writing: make(chan struct{}), release: make(chan struct{})}
	log := logrus.New()
	log.SetOutput(out)
	srv := NewServer(NewHandler(newRealDriver(t, t.TempDir()), HandlerOptions{Log: log}), log)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(5 * time.Second) })
	// Before the shutdown (cleanups run last first): a failing run must not
	// leave the handler blocked in its log line.
	t.Cleanup(func() { close(out.release) })
	c := newDockerdClient(t, sock)

	answered := make(chan int)
	var hdr http.Header
	go func() {
		st, _, h := c.post("/VolumeDriver.Create", `{"Name":"logged","Opts":null}`)
		hdr = h
		answered <- st
	}()
	select {
	case <-out.writing:
	case <-time.After(10 * time.Second):
		t.Fatal("Create's log line was never written")
	}
	select {
	case st := <-answered:
		if st != http.StatusOK || hdr.Get("Content-Length") == "" {
			t.Fatalf("Create answered %d with headers %v", st, hdr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the answer waited for the log line")
	}
}
