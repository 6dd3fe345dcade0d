package plugin

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// streamer is a volume.Driver whose List answer is written by WriteList.
type streamer struct {
	volume.Driver // nil: only List and WriteList are called
	write         func(io.Writer) error
}

func (s streamer) WriteList(w io.Writer) error { return s.write(w) }

func (s streamer) List() (*volume.ListResponse, error) {
	return nil, errors.New("List must not be called when WriteList exists")
}

func postList(t *testing.T, h http.Handler) (*http.Response, string, error) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := http.Post(srv.URL+"/VolumeDriver.List", "", strings.NewReader("{}"))
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return l
}

func TestListIsStreamedFromWriteList(t *testing.T) {
	body := `{"Volumes":[{"Name":"a","Mountpoint":"/a","CreatedAt":"2024-01-01T00:00:00Z"}]}` + "\n"
	var observed error = errors.New("not observed")
	h := NewHandler(streamer{write: func(w io.Writer) error { _, err := io.WriteString(w, body); return err }},
		HandlerOptions{Log: quiet(), Observer: func(op string, err error, _ time.Duration) {
			if op == "List" {
				observed = err
			}
		}})
	res, got, err := postList(t, h)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || got != body {
		t.Fatalf("got %s %q, want 200 %q", res.Status, got, body)
	}
	if observed != nil {
		t.Fatalf("observer saw %v, want a successful List", observed)
	}
}

func TestListErrorBeforeAnythingIsSentIsAnErrorAnswer(t *testing.T) {
	h := NewHandler(streamer{write: func(w io.Writer) error {
		io.WriteString(w, `{"Volumes":[`) // still buffered
		return errors.New("listing volumes: disk on fire")
	}}, HandlerOptions{Log: quiet()})
	res, got, err := postList(t, h)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusInternalServerError || !strings.Contains(got, `"Err":"listing volumes: disk on fire"`) || strings.Contains(got, "Volumes") {
		t.Fatalf("got %s %q, want 500 with the error alone", res.Status, got)
	}
}

func TestListErrorMidStreamCutsTheConnection(t *testing.T) {
	h := NewHandler(streamer{write: func(w io.Writer) error {
		io.WriteString(w, `{"Volumes":[`)
		io.WriteString(w, strings.Repeat(`{"Name":"x"},`, 20000)) // past the buffer: sent
		return errors.New("record unreadable")
	}}, HandlerOptions{Log: quiet()})
	_, got, err := postList(t, h)
	if err == nil {
		t.Fatalf("a List that failed half-way was read without error (%d bytes): a client would take a short list for the whole", len(got))
	}
}
