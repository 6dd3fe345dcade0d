// Package ui is stowage's read-only web view (serve --ui-addr): one page,
// embedded, over a small JSON API that only answers GET. It shows every
// volume a page at a time, totals per backend, doctor's findings, recent
// failed requests and request rates. It is built to stay cheap for the
// daemon at 100 000 volumes: names come from one scan, rebuilt only after a
// request that may change them, and usage is read only for the rows shown.
package ui

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/stowage/stowage/driver"
	"github.com/stowage/stowage/internal/store"
)

//go:embed assets
var assets embed.FS

// Scanner streams every record in name order (the store's Scan).
type Scanner interface {
	Scan(fn func(*store.Volume) error) error
}

// Config is what a UI reads from. Every field but Now and Log is required.
type Config struct {
	Volumes Scanner
	// Get describes one volume as Docker's Get does (the driver's),
	// usage included.
	Get func(name string) (*volume.Volume, error)
	// Findings are doctor's findings (the driver's quiet check).
	Findings func(ctx context.Context) ([]driver.Finding, error)
	// BootID tells stale ledger entries (of another boot) from live ones.
	BootID   string
	Recorder *Recorder
	Log      logrus.FieldLogger
	Now      func() time.Time
}

// Tunables; tests shorten none of them.
const (
	usageTTL        = 2 * time.Second // how long a row's Get (and usage) is reused
	minRebuild      = time.Second     // least time between two scans after changes
	maxSnapshotAge  = 30 * time.Second
	idleDrop        = 2 * time.Minute // no page asked this long: free the names
	findingsEvery   = time.Minute
	findingsChanged = 10 * time.Second // after a change, recheck no sooner
	defaultLimit    = 50
	maxLimit        = 500
)

// UI serves the page and its API.
type UI struct {
	cfg Config

	snapMu   sync.Mutex
	snap     *snapshot
	lastUse  time.Time
	idle     *time.Timer
	lastCost time.Duration

	getMu sync.Mutex
	gets  map[string]cachedGet

	findMu    sync.Mutex
	find      []FindingView
	findErr   string
	findAt    time.Time
	findChg   uint64
	findBusy  bool
	findEver  bool
	findCheck time.Duration
}

type cachedGet struct {
	at  time.Time
	vol *volume.Volume
	err error
}

// New returns a UI over cfg.
func New(cfg Config) *UI {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = logrus.New()
	}
	return &UI{cfg: cfg, gets: map[string]cachedGet{}}
}

// row is one volume as the list needs it before its page is shown: small,
// since the snapshot holds one per volume.
type row struct {
	name, backend string
	created       time.Time
	mounts, stale int
}

type snapshot struct {
	rows    []row
	at      time.Time
	changes uint64
	totals  []BackendTotal
}

// BackendTotal sums one backend's volumes.
type BackendTotal struct {
	Backend string `json:"backend"`
	Volumes int    `json:"volumes"`
	Mounts  int    `json:"mounts"`
	Stale   int    `json:"stale"`
}

// current returns the snapshot, rebuilding it when a request since the
// last scan may have changed the volumes (no sooner than minRebuild, or
// four times what the last scan took) or when it is old.
func (u *UI) current() (*snapshot, error) {
	u.snapMu.Lock()
	defer u.snapMu.Unlock()
	now := u.cfg.Now()
	u.lastUse = now
	if u.idle == nil {
		u.idle = time.AfterFunc(idleDrop, u.dropIfIdle)
	} else {
		u.idle.Reset(idleDrop)
	}
	ch := u.cfg.Recorder.Changes()
	s := u.snap
	wait := max(minRebuild, 4*u.lastCost)
	if s != nil && now.Sub(s.at) < maxSnapshotAge && (ch == s.changes || now.Sub(s.at) < wait) {
		return s, nil
	}
	began := time.Now()
	ns := &snapshot{at: now, changes: ch}
	if s != nil {
		ns.rows = make([]row, 0, len(s.rows)+16)
	}
	by := map[string]*BackendTotal{}
	err := u.cfg.Volumes.Scan(func(v *store.Volume) error {
		t := by[v.Backend]
		if t == nil {
			t = &BackendTotal{Backend: v.Backend}
			by[v.Backend] = t
		}
		// One backend string for all its rows, not one per record.
		r := row{name: v.Name, backend: t.Backend, created: v.CreatedAt}
		for _, m := range v.Mounts {
			r.mounts += m.Count
			if m.Boot != u.cfg.BootID {
				r.stale += m.Count
			}
		}
		ns.rows = append(ns.rows, r)
		t.Volumes++
		t.Mounts += r.mounts
		t.Stale += r.stale
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the volumes: %v", err)
	}
	for _, t := range by {
		ns.totals = append(ns.totals, *t)
	}
	sort.Slice(ns.totals, func(i, j int) bool { return ns.totals[i].Backend < ns.totals[j].Backend })
	u.lastCost = time.Since(began)
	u.snap = ns
	u.cfg.Log.WithFields(logrus.Fields{"op": "ui", "volumes": len(ns.rows), "duration": u.lastCost}).Debug("web view: volumes scanned")
	return ns, nil
}

func (u *UI) dropIfIdle() {
	u.snapMu.Lock()
	defer u.snapMu.Unlock()
	if u.cfg.Now().Sub(u.lastUse) >= idleDrop {
		u.snap = nil
	}
}

// describe is the driver's Get, reused for usageTTL: a page polled every
// second reads each shown volume's usage at most every usageTTL.
func (u *UI) describe(name string) (*volume.Volume, error) {
	now := u.cfg.Now()
	u.getMu.Lock()
	c, ok := u.gets[name]
	if ok && now.Sub(c.at) < usageTTL {
		u.getMu.Unlock()
		return c.vol, c.err
	}
	u.getMu.Unlock()
	vol, err := u.cfg.Get(name)
	u.getMu.Lock()
	for k, c := range u.gets {
		if now.Sub(c.at) >= usageTTL {
			delete(u.gets, k)
		}
	}
	u.gets[name] = cachedGet{at: now, vol: vol, err: err}
	u.getMu.Unlock()
	return vol, err
}

// Opt is one option or status detail; a secret's value is never sent.
type Opt struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Secret bool   `json:"secret,omitempty"`
	// File marks a value that names a secret's file (sshfs's identity):
	// the name is shown, the content never read.
	File bool `json:"file,omitempty"`
}

// secretWords mark an option or status name whose value is hidden.
var secretWords = []string{"password", "passwd", "passphrase", "secret", "token", "key", "credential"}

func option(name string, value string) Opt {
	low := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(low, w) {
			return Opt{Name: name, Value: "(hidden)", Secret: true}
		}
	}
	return Opt{Name: name, Value: value, File: strings.Contains(low, "identity")}
}

// VolumeView is one row of the list.
type VolumeView struct {
	Name       string `json:"name"`
	Backend    string `json:"backend"`
	CreatedAt  string `json:"created_at"`
	Mounts     int    `json:"mounts"`
	Stale      int    `json:"stale"`
	StaleFix   string `json:"stale_fix,omitempty"`
	Mountpoint string `json:"mountpoint,omitempty"`
	// Limit and Used are absent when the backend has no cheap usage.
	Limit   *uint64 `json:"size_limit_bytes,omitempty"`
	Used    *uint64 `json:"used_bytes,omitempty"`
	Options []Opt   `json:"options"`
	Details []Opt   `json:"details"`
	Problem string  `json:"problem,omitempty"`
}

// VolumesPage answers /api/volumes.
type VolumesPage struct {
	Total   int          `json:"total"`   // every volume
	Matched int          `json:"matched"` // those the filter keeps
	Offset  int          `json:"offset"`
	Limit   int          `json:"limit"`
	Volumes []VolumeView `json:"volumes"`
}

func (u *UI) volumes(q string, offset, limit int) (*VolumesPage, error) {
	s, err := u.current()
	if err != nil {
		return nil, err
	}
	page := &VolumesPage{Total: len(s.rows), Offset: offset, Limit: limit, Volumes: []VolumeView{}}
	var picked []row
	for _, r := range s.rows {
		if q != "" && !strings.Contains(r.name, q) {
			continue
		}
		if page.Matched >= offset && len(picked) < limit {
			picked = append(picked, r)
		}
		page.Matched++
	}
	for _, r := range picked {
		page.Volumes = append(page.Volumes, u.view(r))
	}
	return page, nil
}

// view fills a row from the driver's Get; a volume removed since the scan
// keeps its row with the error, until the next scan drops it.
func (u *UI) view(r row) VolumeView {
	v := VolumeView{Name: r.name, Backend: r.backend, CreatedAt: r.created.Format(time.RFC3339), Mounts: r.mounts, Stale: r.stale,
		Options: []Opt{}, Details: []Opt{}}
	vol, err := u.describe(r.name)
	if err != nil {
		v.Problem = err.Error()
		return v
	}
	v.Mountpoint = vol.Mountpoint
	keys := make([]string, 0, len(vol.Status))
	for k := range vol.Status {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := vol.Status[k]
		switch k {
		case "backend":
		case "mounts":
			if n, ok := asUint(val); ok {
				v.Mounts = int(n)
			}
		case "stale_mounts":
			if n, ok := asUint(val); ok {
				v.Stale = int(n)
			}
		case "size_bytes":
			if n, ok := asUint(val); ok {
				v.Limit = &n
			}
		case "used_bytes":
			if n, ok := asUint(val); ok {
				v.Used = &n
			}
		case "problem":
			v.Problem = fmt.Sprint(val)
		case "options":
			opts, _ := val.(map[string]string)
			names := make([]string, 0, len(opts))
			for n := range opts {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				v.Options = append(v.Options, option(n, opts[n]))
			}
		default:
			if opts, _ := vol.Status["options"].(map[string]string); opts[k] != fmt.Sprint(val) {
				v.Details = append(v.Details, option(k, fmt.Sprint(val)))
			}
		}
	}
	if v.Stale > 0 {
		v.StaleFix = "stowage release " + r.name
	}
	return v
}

func asUint(v interface{}) (uint64, bool) {
	switch n := v.(type) {
	case uint64:
		return n, true
	case int:
		return uint64(max(n, 0)), true
	case int64:
		return uint64(max(n, 0)), true
	case float64:
		return uint64(max(n, 0)), true
	}
	return 0, false
}

// FindingView is one of doctor's findings with what it means and what to do.
type FindingView struct {
	driver.Finding
	Meaning string `json:"meaning"`
	Fix     string `json:"fix"`
}

func explain(f driver.Finding) FindingView {
	v := FindingView{Finding: f}
	switch f.Kind {
	case driver.FindStaleMount:
		v.Meaning = "A mount-ledger entry from before the last reboot: no container can hold it and Docker will never unmount it, so it keeps the volume in use and blocks its removal."
		v.Fix = "stowage release " + f.Volume + "   (or: stowage doctor --fix)"
	case driver.FindMissingData:
		v.Meaning = "The volume is recorded, but its data is gone. It is still listed; mounting it fails."
		v.Fix = "Restore the data to its place, or remove the volume: docker volume rm " + f.Volume
	case driver.FindUnrecorded:
		v.Meaning = "Data on disk that no volume records, left by a crash or by hand. stowage never deletes it."
		v.Fix = "Inspect it; move it away or delete it yourself."
	case driver.FindDisabledBackend:
		v.Meaning = "The volume's backend is not enabled in this daemon: it is listed but cannot be mounted."
		v.Fix = "Restart stowage with the backend enabled (--backends)."
	case driver.FindUnfinished:
		v.Meaning = "An operation cut by a crash that recovery could neither finish nor undo."
		v.Fix = "Read the daemon's log for the reason; recovery retries it at each start."
	case "unrecorded-mount":
		v.Meaning = "Something is mounted in a backend's directory under a name no volume records; it keeps that directory busy."
		v.Fix = "Unmount it by hand once nothing uses it."
	default:
		v.Meaning = "A backend reported a problem."
		v.Fix = "Read the detail; stowage doctor shows the same."
	}
	return v
}

// findings returns the last check and starts a new one in the background
// when due: never on a request's path, at most every findingsChanged after
// a change and every findingsEvery otherwise (a check reads every record
// and each backend's directory).
func (u *UI) findings() (list []FindingView, at time.Time, checking bool, errText string) {
	u.findMu.Lock()
	defer u.findMu.Unlock()
	now := u.cfg.Now()
	ch := u.cfg.Recorder.Changes()
	due := !u.findEver || now.Sub(u.findAt) >= findingsEvery ||
		(ch != u.findChg && now.Sub(u.findAt) >= max(findingsChanged, 10*u.findCheck))
	if due && !u.findBusy {
		u.findBusy = true
		go u.check(ch)
	}
	return u.find, u.findAt, u.findBusy, u.findErr
}

func (u *UI) check(ch uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	fs, err := u.cfg.Findings(ctx)
	views := make([]FindingView, 0, len(fs))
	for _, f := range fs {
		views = append(views, explain(f))
	}
	u.findMu.Lock()
	defer u.findMu.Unlock()
	u.findBusy, u.findEver, u.findAt, u.findChg, u.findCheck = false, true, u.cfg.Now(), ch, time.Since(began)
	if err != nil {
		u.findErr = err.Error()
		u.cfg.Log.WithError(err).WithField("op", "ui").Warn("checking the state for the web view")
		return
	}
	u.find, u.findErr = views, ""
}

// Summary answers /api/summary.
type Summary struct {
	Now       time.Time          `json:"now"`
	Volumes   int                `json:"volumes"`
	Backends  []BackendTotal     `json:"backends"`
	Findings  []FindingView      `json:"findings"`
	CheckedAt *time.Time         `json:"checked_at,omitempty"`
	Checking  bool               `json:"checking"`
	CheckErr  string             `json:"check_error,omitempty"`
	Failed    []Failed           `json:"failed"`
	Series    map[string][]Point `json:"series"`
}

func (u *UI) summary() (*Summary, error) {
	s, err := u.current()
	if err != nil {
		return nil, err
	}
	out := &Summary{Now: u.cfg.Now(), Volumes: len(s.rows), Backends: s.totals, Failed: u.cfg.Recorder.FailedRecent(),
		Series: u.cfg.Recorder.Series(time.Now())}
	var at time.Time
	out.Findings, at, out.Checking, out.CheckErr = u.findings()
	if out.Findings == nil {
		out.Findings = []FindingView{}
	}
	if !at.IsZero() {
		out.CheckedAt = &at
	}
	if out.Backends == nil {
		out.Backends = []BackendTotal{}
	}
	return out, nil
}

// csp allows the page's own files and fetches, nothing inline, no frames.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Hosts are the Host header values a browser sends to l: anything else is a
// DNS-rebinding page (evil.example resolving to 127.0.0.1) or a proxy the
// operator did not set up for this. Nil for a unix socket, which no page
// can reach.
func Hosts(l net.Listener) []string {
	a, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	port := strconv.Itoa(a.Port)
	hosts := []string{net.JoinHostPort(a.IP.String(), port), "localhost:" + port}
	if a.IP.To4() != nil && a.IP.IsLoopback() {
		hosts = append(hosts, "127.0.0.1:"+port)
	}
	return hosts
}

// Handler serves the page and API; hosts are the accepted Host headers
// (Hosts of the listener; nil accepts any).
func (u *UI) Handler(hosts []string) http.Handler {
	mux := http.NewServeMux()
	file := func(name, ctype string) http.HandlerFunc {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			panic(err) // embedded at build time: a missing file is a build bug
		}
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Cache-Control", "no-cache")
			w.Write(b)
		}
	}
	page := file("index.html", "text/html; charset=utf-8")
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		// Scan while the browser fetches the script: at 100 000 volumes
		// the scan is most of the first paint.
		go u.current()
		page(w, r)
	})
	mux.Handle("GET /app.js", file("app.js", "text/javascript; charset=utf-8"))
	mux.Handle("GET /app.css", file("app.css", "text/css; charset=utf-8"))
	mux.Handle("GET /favicon.svg", file("favicon.svg", "image/svg+xml"))
	mux.HandleFunc("GET /api/volumes", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		offset, _ := strconv.Atoi(q.Get("offset"))
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit <= 0 {
			limit = defaultLimit
		}
		page, err := u.volumes(q.Get("q"), max(offset, 0), min(limit, maxLimit))
		u.answer(w, page, err)
	})
	mux.HandleFunc("GET /api/summary", func(w http.ResponseWriter, r *http.Request) {
		s, err := u.summary()
		u.answer(w, s, err)
	})
	return guard(hosts, mux)
}

func (u *UI) answer(w http.ResponseWriter, v interface{}, err error) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// guard sets the security headers on every answer and refuses what the
// page never sends: another method, another Host, a cross-origin request.
func guard(hosts []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method "+r.Method+" is not allowed: the web view is read-only", http.StatusMethodNotAllowed)
			return
		}
		if hosts != nil && !contains(hosts, r.Host) {
			http.Error(w, fmt.Sprintf("Host %q is not this listener's (%s): open the page by that address", r.Host, strings.Join(hosts, " or ")), http.StatusForbidden)
			return
		}
		// A page of another origin (another port on localhost is only
		// "same-site") must not read the API, not even by a simple GET; a
		// link followed to the page itself is fine (framing is denied).
		switch r.Header.Get("Sec-Fetch-Site") {
		case "", "none", "same-origin":
		default:
			if r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.URL.Path == "/" {
				break
			}
			http.Error(w, "cross-origin requests are refused", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
			http.Error(w, "cross-origin requests are refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
