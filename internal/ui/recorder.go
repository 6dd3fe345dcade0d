package ui

import (
	"context"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Latency buckets (seconds), the metrics histogram's: quantiles drawn in
// the page read like the dashboard's.
var buckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// opCounts are one operation's cumulative counters.
type opCounts struct {
	n, errs uint64
	sum     float64
	hist    [18]uint64 // len(buckets)+1: the last is +Inf
}

// Failed is one failed request as the page lists it.
type Failed struct {
	At       time.Time `json:"at"`
	Op       string    `json:"op"`
	Error    string    `json:"error"`
	Duration float64   `json:"duration_s"`
}

type sample struct {
	at  time.Time
	ops map[string]opCounts
}

// Recorder is fed every plugin request (plugin.Observer's signature, beside
// the metrics): counters per operation, sampled for the chart, and a short
// ring of the last failures. It also counts requests that may change the
// state, so the page rebuilds its view of the volumes only after one.
type Recorder struct {
	mu      sync.Mutex
	ops     map[string]*opCounts
	failed  []Failed // ring of failedKeep
	next    int
	samples []sample // ring of sampleKeep, oldest first once full
	changes atomic.Uint64
}

const (
	failedKeep  = 50
	sampleEvery = 2 * time.Second
	sampleKeep  = 150 // five minutes
)

// NewRecorder returns an empty recorder; Run samples it.
func NewRecorder() *Recorder {
	return &Recorder{ops: map[string]*opCounts{}}
}

// changing are the operations after which the volumes may differ.
var changing = map[string]bool{"Create": true, "Remove": true, "Mount": true, "Unmount": true, "Release": true, "Resize": true}

// Observe records one request. It is on every request's path: one short
// critical section, no allocation after an operation's first request.
func (r *Recorder) Observe(op string, err error, d time.Duration) {
	if changing[op] {
		r.changes.Add(1)
	}
	s := d.Seconds()
	i := sort.SearchFloat64s(buckets, s)
	r.mu.Lock()
	c := r.ops[op]
	if c == nil {
		c = &opCounts{}
		r.ops[op] = c
	}
	c.n++
	c.sum += s
	c.hist[i]++
	if err != nil {
		c.errs++
	}
	r.mu.Unlock()
	// Docker asks Get before every create: "no such volume" is routine,
	// as in the request log.
	if err != nil && !(op == "Get" && strings.HasSuffix(err.Error(), "no such volume")) {
		r.addFailed(Failed{At: time.Now(), Op: op, Error: err.Error(), Duration: s})
	}
}

func (r *Recorder) addFailed(f Failed) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failed) < failedKeep {
		r.failed = append(r.failed, f)
		return
	}
	r.failed[r.next] = f
	r.next = (r.next + 1) % failedKeep
}

// Changes counts requests that may have changed the volumes.
func (r *Recorder) Changes() uint64 { return r.changes.Load() }

// FailedRecent returns the kept failures, newest first.
func (r *Recorder) FailedRecent() []Failed {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Failed, 0, len(r.failed))
	for i := 0; i < len(r.failed); i++ {
		// next is the oldest once the ring is full; walk back from it.
		j := (r.next - 1 - i + 2*len(r.failed)) % len(r.failed)
		out = append(out, r.failed[j])
	}
	return out
}

func (r *Recorder) snapshot(now time.Time) sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := sample{at: now, ops: make(map[string]opCounts, len(r.ops))}
	for op, c := range r.ops {
		s.ops[op] = *c
	}
	return s
}

// Run samples the counters every sampleEvery until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	r.tick(time.Now())
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.tick(now)
		}
	}
}

func (r *Recorder) tick(now time.Time) {
	s := r.snapshot(now)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == sampleKeep {
		copy(r.samples, r.samples[1:])
		r.samples = r.samples[:sampleKeep-1]
	}
	r.samples = append(r.samples, s)
}

// Point is one interval of one operation on the chart.
type Point struct {
	At     time.Time `json:"t"`
	Rate   float64   `json:"rate"`   // requests per second
	Errors float64   `json:"errors"` // failed requests per second
	P50    float64   `json:"p50"`    // seconds; 0 without requests
	P99    float64   `json:"p99"`
}

// Series are the chart's points per operation, oldest first: the
// differences between consecutive samples, the last up to now.
func (r *Recorder) Series(now time.Time) map[string][]Point {
	cur := r.snapshot(now)
	r.mu.Lock()
	ss := append(make([]sample, 0, len(r.samples)+1), r.samples...)
	r.mu.Unlock()
	ss = append(ss, cur)
	out := map[string][]Point{}
	for op := range cur.ops {
		pts := make([]Point, 0, len(ss))
		for i := 1; i < len(ss); i++ {
			dt := ss[i].at.Sub(ss[i-1].at).Seconds()
			if dt <= 0 {
				continue
			}
			a, b := ss[i-1].ops[op], ss[i].ops[op]
			var h [18]uint64
			for k := range h {
				h[k] = b.hist[k] - a.hist[k]
			}
			n := b.n - a.n
			pts = append(pts, Point{At: ss[i].at, Rate: float64(n) / dt, Errors: float64(b.errs-a.errs) / dt,
				P50: quantile(0.5, h, n), P99: quantile(0.99, h, n)})
		}
		out[op] = pts
	}
	return out
}

// quantile interpolates within the bucket that holds the q-th request, as
// Prometheus' histogram_quantile does.
func quantile(q float64, h [18]uint64, n uint64) float64 {
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var seen uint64
	for i, c := range h {
		if float64(seen+c) >= rank && c > 0 {
			if i == len(buckets) {
				return buckets[len(buckets)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = buckets[i-1]
			}
			frac := (rank - float64(seen)) / float64(c)
			return lo + (buckets[i]-lo)*math.Max(0, math.Min(1, frac))
		}
		seen += c
	}
	return buckets[len(buckets)-1]
}
