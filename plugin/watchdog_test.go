package plugin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Clients that connect and say nothing, stall inside a request, or sit idle
// are cut after their state's limit; a client that keeps talking is not.
func TestWatchdogCutsStuckConnections(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "w.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	lim := limits{New: 300 * time.Millisecond, Idle: 600 * time.Millisecond, Active: 900 * time.Millisecond, Tick: 50 * time.Millisecond}
	srv := newServer(h, quiet(), lim)
	go srv.Serve(l)
	defer srv.Shutdown(time.Second)

	// cutAfter dials, runs prepare, and says how long until the server
	// closed the connection.
	cutAfter := func(prepare func(c net.Conn)) time.Duration {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		prepare(c)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
		return time.Since(start)
	}
	silent := cutAfter(func(net.Conn) {})
	// Headers, then a body that never comes.
	stalled := cutAfter(func(c net.Conn) {
		io.WriteString(c, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
	})
	idle := cutAfter(func(c net.Conn) {
		io.WriteString(c, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	})
	for _, c := range []struct {
		what     string
		got, lim time.Duration
	}{{"silent", silent, lim.New}, {"stalled", stalled, lim.Active}, {"idle", idle, lim.Idle}} {
		if c.got < c.lim-lim.Tick || c.got > c.lim+time.Second {
			t.Errorf("%s connection cut after %v, limit %v", c.what, c.got, c.lim)
		}
	}

	// A busy connection is never cut: requests every 100 ms for longer
	// than every limit.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, err := io.WriteString(c, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
			t.Fatalf("busy connection cut: %v", err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("busy connection cut: %v", err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(b), "ok") {
			t.Fatalf("answer %q", b)
		}
	}
}
