// Package metrics is stowage's opt-in observability: Prometheus metrics on a
// private registry, and /healthz and /readyz, served on a loopback address or
// a unix socket only.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/internal/store"
)

// Lister is what the scrape-time collector reads: the store's Scan, from
// the index, so a scrape never touches a backend, and never holds every
// record (or one long read transaction) at once.
type Lister interface {
	Scan(fn func(*store.Volume) error) error
}

// Metrics holds stowage's collectors on their own registry (never the
// process-global default one).
type Metrics struct {
	Registry *prometheus.Registry

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	commit   prometheus.Histogram
	lister   Lister

	ready atomic.Bool
}

// New registers every metric; volumes and active mounts are computed at
// scrape time from l, so requests never pay for them.
func New(l Lister) *Metrics {
	m := &Metrics{
		lister:   l,
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_requests_total",
			Help: "Plugin requests by operation and result (ok or error).",
		}, []string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stowage_request_duration_seconds",
			Help:    "Plugin request latency by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"op"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stowage_state_commit_duration_seconds",
			Help:    "Durable state commit latency: one append to the state journal made durable with fdatasync, possibly grouping several writers (checkpoints into the state file are not counted).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	m.Registry.MustRegister(m.requests, m.duration, m.commit, &stateCollector{l: l},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// ObserveRequest records one plugin request (plugin.Observer's signature).
func (m *Metrics) ObserveRequest(op string, err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.requests.WithLabelValues(op, result).Inc()
	m.duration.WithLabelValues(op).Observe(d.Seconds())
}

// ObserveCommit records one state commit (store.CommitObserver's signature).
func (m *Metrics) ObserveCommit(d time.Duration) { m.commit.Observe(d.Seconds()) }

// SetReady flips /readyz: true once the state is open, reconciled and the
// plugin socket serves; false again at shutdown.
func (m *Metrics) SetReady(ok bool) { m.ready.Store(ok) }

var (
	volumesDesc = prometheus.NewDesc("stowage_volumes", "Volumes recorded in the state, by backend.", []string{"backend"}, nil)
	mountsDesc  = prometheus.NewDesc("stowage_active_mounts", "Mounts the ledger counts, all volumes together (stale entries from earlier boots included).", nil, nil)
	errorDesc   = prometheus.NewDesc("stowage_state_read_errors", "1 if the last scrape could not read the state.", nil, nil)
)

type stateCollector struct{ l Lister }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- volumesDesc
	ch <- mountsDesc
	ch <- errorDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	by := map[string]int{}
	mounts := 0
	err := c.l.Scan(func(v *store.Volume) error {
		by[v.Backend]++
		mounts += v.ActiveMounts()
		return nil
	})
	if err != nil {
		ch <- prometheus.MustNewConstMetric(errorDesc, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(errorDesc, prometheus.GaugeValue, 0)
	for b, n := range by {
		ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(n), b)
	}
	ch <- prometheus.MustNewConstMetric(mountsDesc, prometheus.GaugeValue, float64(mounts))
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready: the state is not reconciled or the plugin socket is not serving yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Listen parses --metrics-addr and listens: "unix:/path" for a unix socket
// (mode 0600), or HOST:PORT where HOST must be a loopback address. Metrics
// name volumes' backends and counts: they are not for the network.
func Listen(addr string) (net.Listener, error) { return ListenFor("--metrics-addr", addr) }

// ListenFor is Listen for the flag named flagName (errors name it), so
// every private listener (metrics, the web view) is refused alike.
func ListenFor(flagName, addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%s %q: a unix socket needs an absolute path (unix:/run/stowage-metrics.sock)", flagName, addr)
		}
		if fi, err := os.Lstat(p); err == nil {
			if fi.Mode()&os.ModeSocket == 0 {
				return nil, fmt.Errorf("%s %q: %s exists and is not a socket; stowage will not replace it", flagName, addr, p)
			}
			if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("%s %q: a live process answers on %s", flagName, addr, p)
			}
			os.Remove(p)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("%s %q: %w", flagName, addr, err)
		}
		l, err := net.Listen("unix", p)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", flagName, addr, err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			l.Close()
			return nil, fmt.Errorf("%s %q: %w", flagName, addr, err)
		}
		return l, nil
	}
	if err := checkLoopback(flagName, addr); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", flagName, addr, err)
	}
	return l, nil
}

// CheckLoopback accepts HOST:PORT only when HOST is a loopback IP or
// "localhost".
func CheckLoopback(addr string) error { return checkLoopback("--metrics-addr", addr) }

func checkLoopback(flagName, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: use 127.0.0.1:PORT, [::1]:PORT or unix:/path (%v)", flagName, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s %q: only loopback addresses (127.0.0.1, ::1) or unix:/path are allowed; put a proxy in front to publish it", flagName, addr)
	}
	return nil
}

// Server runs the metrics endpoint until Close.
type Server struct {
	srv  *http.Server
	l    net.Listener
	done chan struct{}
}

// Serve starts serving m on l in the background.
func (m *Metrics) Serve(l net.Listener, log logrus.FieldLogger) *Server {
	return ServeHandler(l, m.Handler(), "metrics endpoint", log)
}

// ServeHandler serves h on l in the background, with the metrics
// endpoint's timeouts; what names the endpoint in the log.
func ServeHandler(l net.Listener, h http.Handler, what string, log logrus.FieldLogger) *Server {
	s := &Server{l: l, done: make(chan struct{}), srv: &http.Server{
		Handler: h, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
	}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error(what + " stopped")
		}
	}()
	return s
}

// Close stops the endpoint; a unix socket file is removed with the listener.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}
