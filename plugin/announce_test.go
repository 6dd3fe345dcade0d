package plugin

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeEngine answers the two calls an Announcer makes, as dockerd does: an
// event stream that stays open, and a volume list that records the filter.
type fakeEngine struct {
	t    *testing.T
	path string
	mu   sync.Mutex
	seen []string
	srv  *http.Server
	got  chan string
}

func startFakeEngine(t *testing.T, path string, got chan string) *fakeEngine {
	e := &fakeEngine{t: t, path: path, got: got}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/volumes", func(w http.ResponseWriter, r *http.Request) {
		e.got <- r.URL.Query().Get("filters")
		io.WriteString(w, `{"Volumes":[],"Warnings":null}`)
	})
	e.srv = &http.Server{Handler: mux}
	go e.srv.Serve(l)
	return e
}

// stop is dockerd going away: listener and open streams closed at once.
func (e *fakeEngine) stop() { e.srv.Close() }

func wantAnnounce(t *testing.T, got chan string, want string) {
	t.Helper()
	select {
	case f := <-got:
		if f != want {
			t.Fatalf("dockerd was asked for %s, want %s", f, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no announcement (want %s)", want)
	}
}

// Before any engine runs the announcer waits; it announces every driver to
// the engine once it appears, and again to the next one after a restart,
// and to no one while none runs.
func TestAnnouncerTellsEachEngineThatStarts(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	a := NewAnnouncer(sock, []string{"stowage", "stowage-tls"}, quiet())
	a.Retry = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	}()

	time.Sleep(100 * time.Millisecond) // a few failed attempts: no engine yet
	got := make(chan string, 10)
	for round := 0; round < 2; round++ {
		e := startFakeEngine(t, sock, got)
		wantAnnounce(t, got, `{"driver":["stowage"]}`)
		wantAnnounce(t, got, `{"driver":["stowage-tls"]}`)
		select {
		case f := <-got:
			t.Fatalf("announced twice to one engine: %s", f)
		case <-time.After(150 * time.Millisecond):
		}
		e.stop()
	}
}

func TestDockerSocketWantsAUnixSocketPath(t *testing.T) {
	for _, h := range []string{"tcp://127.0.0.1:2375", "unix://docker.sock", "/var/run/docker.sock", "unix:///var/run/../run/docker.sock", ""} {
		if _, err := DockerSocket(h); err == nil {
			t.Errorf("DockerSocket(%q) accepted it", h)
		}
	}
}

// An engine that takes connections but answers nothing holds the announcer
// for Timeout at most: it tries again, and announces once answers come.
func TestAnnouncerOutlivesAnEngineThatNeverAnswers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	a := NewAnnouncer(sock, []string{"stowage"}, quiet())
	a.Retry, a.Timeout = 20*time.Millisecond, 100*time.Millisecond
	var mu sync.Mutex
	answer := false
	hung := make(chan struct{}, 100)
	got := make(chan string, 10)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ok := answer
		mu.Unlock()
		if !ok {
			hung <- struct{}{}
		} else {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done()
	})
	mux.HandleFunc("/volumes", func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Query().Get("filters")
		io.WriteString(w, `{"Volumes":[]}`)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 0; i < 2; i++ { // two attempts met a silent engine: it came back
		select {
		case <-hung:
		case <-time.After(5 * time.Second):
			t.Fatalf("attempt %d never reached the engine: the announcer is stuck", i+1)
		}
	}
	mu.Lock()
	answer = true
	mu.Unlock()
	wantAnnounce(t, got, `{"driver":["stowage"]}`)
}
