package plugin

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/client"
)

// noDriver serves only the operator endpoint under test.
type noDriver struct{ volume.Driver }

// Shutdown lets a request in flight finish and answer, refuses new ones, and
// gives up on a request that outlives its bound.
func TestShutdownDrainsInFlightThenGivesUpAtTheBound(t *testing.T) {
	entered, release := make(chan struct{}, 2), make(chan struct{})
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	h := NewHandler(noDriver{}, HandlerOptions{Log: log, Operator: map[string]Endpoint{
		"Slow": {Call: func(interface{}) (interface{}, error) {
			entered <- struct{}{}
			<-release
			return map[string]string{"done": "yes"}, nil
		}},
	}})
	sock := filepath.Join(t.TempDir(), "s.sock")
	start := func() (*Server, chan error) {
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := NewServer(h, log)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		return srv, served
	}
	call := func() chan error {
		done := make(chan error, 1)
		go func() {
			var resp map[string]string
			err := client.New(sock).Call(context.Background(), "/Stowage.Slow", nil, &resp)
			if err == nil && resp["done"] != "yes" {
				t.Errorf("answer %v", resp)
			}
			done <- err
		}()
		return done
	}

	// Drained: the request in flight finishes and is answered.
	srv, served := start()
	inFlight := call()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(10 * time.Second) }()
	time.Sleep(100 * time.Millisecond)
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted during shutdown")
	}
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) with a request still in flight", err)
	default:
	}
	close(release)
	if err := <-inFlight; err != nil {
		t.Fatalf("the request in flight was cut off: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown after draining: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}

	// Bounded: a request that never finishes does not hold shutdown.
	release = make(chan struct{})
	defer close(release)
	srv, served = start()
	stuck := call()
	<-entered
	begin := time.Now()
	if err := srv.Shutdown(300 * time.Millisecond); err == nil {
		t.Fatal("Shutdown reported a clean drain while a request was stuck")
	}
	if waited := time.Since(begin); waited > 5*time.Second {
		t.Fatalf("Shutdown took %s with a 300ms bound", waited)
	}
	if err := <-stuck; err == nil {
		t.Fatal("the stuck request was answered as if complete")
	}
	<-served
}
