package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// An Announcer makes dockerd find a legacy plugin as soon as both are up.
//
// dockerd looks a legacy plugin up only when something first names its
// driver, and a Swarm node tells the managers only the volume drivers its
// engine has looked up: on a node where no volume of the driver was used
// since dockerd started, every task that needs one is refused with "no
// suitable node (missing plugin on N nodes)". Listing the driver's volumes
// through the engine's API is such a lookup. The announcer does it whenever
// it reaches an engine it has not announced to (it holds an event stream
// open to notice the engine going away), so a restarted dockerd learns of
// the plugin too.
type Announcer struct {
	// API is the path of dockerd's API socket.
	API string
	// Drivers are the driver names to announce.
	Drivers []string
	Log     logrus.FieldLogger
	// Retry is the pause between attempts to reach the engine.
	Retry time.Duration
	// Timeout bounds each answer but the event stream's body. A listing
	// may wait ~30 s on each dead plugin socket dockerd still knows.
	Timeout time.Duration

	client *http.Client
}

// NewAnnouncer announces drivers to the engine whose API socket is at api
// (DockerSocket reads it from a DOCKER_HOST-style value).
func NewAnnouncer(api string, drivers []string, log logrus.FieldLogger) *Announcer {
	a := &Announcer{API: api, Drivers: drivers, Log: log, Retry: 2 * time.Second, Timeout: 2 * time.Minute}
	a.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", a.API)
		},
		// One stream and one short request at a time.
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}}
	return a
}

// DockerSocket is the path in a DOCKER_HOST-style unix:///path (the only
// transport a local plugin needs).
func DockerSocket(host string) (string, error) {
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok || !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "", fmt.Errorf("%q is not unix:///ABSOLUTE/PATH of dockerd's API socket", host)
	}
	return path, nil
}

// Run announces to each engine it reaches until ctx ends.
func (a *Announcer) Run(ctx context.Context) {
	log := a.Log.WithFields(logrus.Fields{"op": "announce", "docker_host": "unix://" + a.API})
	var lastErr string
	for ctx.Err() == nil {
		err := a.once(ctx, log)
		if ctx.Err() != nil {
			return
		}
		// Whether no engine runs yet or one went away: quietly try again.
		if msg := fmt.Sprint(err); err != nil && msg != lastErr {
			log.WithError(err).Debug("cannot announce the driver to dockerd yet; retrying")
			lastErr = msg
		}
		select {
		case <-ctx.Done():
		case <-time.After(a.Retry):
		}
	}
}

// once opens an event stream to the engine (to learn when it goes away),
// announces every driver, then waits for the stream to end.
func (a *Announcer) once(ctx context.Context, log logrus.FieldLogger) error {
	// An engine that takes the connection but never answers must not hold
	// the announcer for good: past Timeout it tries again.
	evCtx, evCancel := context.WithCancel(ctx)
	defer evCancel()
	timer := time.AfterFunc(a.Timeout, evCancel)
	events, err := a.get(evCtx, "/events?filters="+url.QueryEscape(`{"type":["daemon"]}`))
	if !timer.Stop() && err != nil {
		err = fmt.Errorf("dockerd did not answer within %v: %w", a.Timeout, err)
	}
	if err != nil {
		return err
	}
	defer events.Body.Close()
	for _, d := range a.Drivers {
		start := time.Now()
		if err := a.list(ctx, d); err != nil {
			return fmt.Errorf("listing volumes of driver %q: %w", d, err)
		}
		log.WithFields(logrus.Fields{"driver": d, "duration": time.Since(start)}).Info("dockerd has looked the volume driver up; Swarm sees it on this node")
	}
	// The stream carries nothing we need; its end is the news.
	_, err = io.Copy(io.Discard, events.Body)
	if err == nil {
		err = errors.New("dockerd closed its event stream")
	}
	return err
}

func (a *Announcer) list(ctx context.Context, driver string) error {
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	resp, err := a.get(ctx, "/volumes?filters="+url.QueryEscape(fmt.Sprintf(`{"driver":[%q]}`, driver)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return err
}

func (a *Announcer) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return resp, nil
}
