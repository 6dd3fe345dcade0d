// Package engine starts private, disposable Docker engines for end-to-end
// tests. Each engine has its own data-root, exec-root, containerd, cgroup
// parent and network namespace, so tests can restart it freely without
// disturbing other tests or the system engine.
//
// Only container networking "none" works: the engine has no bridge, so tests
// must pass --network none to docker run/create.
//
// With Options.NS the engine runs inside namespaces the test made instead (a
// node of internal/e2e/cluster): its network, mounts and hostname are then
// the node's.
package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/e2e/ns"
)

// Options configures a private engine.
type Options struct {
	LiveRestore bool   // start dockerd with --live-restore
	Name        string // optional short label used in paths/namespaces; default random
	// NS runs dockerd inside these namespaces (nsenter) instead of a fresh
	// network namespace of its own; kept across Restart.
	NS ns.Set
	// Env is extra environment for dockerd (KEY=VALUE); kept across Restart.
	Env []string
	// OwnMountNS starts dockerd in a mount namespace of its own (a private
	// copy of the host's), so a test can give it host paths of its own (a
	// "fresh host") with nsenter. Its mounts are then not in the host's
	// mount table: look through /proc/PID/root and /proc/PID/mountinfo.
	OwnMountNS bool
}

// Engine is one private dockerd. Its zero value is not usable: call Start.
type Engine struct {
	dir     string // /tmp/stwe-LABEL, everything of this engine lives below
	label   string // stwe-LABEL: containerd namespaces, cgroup parent
	bin     binaries
	version Version

	mu   sync.Mutex
	opts Options
	cmd  *exec.Cmd     // nil while stopped
	done chan struct{} // closed when cmd has exited

	cleanOnce sync.Once
	cleanErr  error
}

const (
	imageName      = "stowage-test/busybox:latest"
	startTimeout   = 60 * time.Second
	stopTimeout    = 20 * time.Second
	dockerTimeout  = 3 * time.Minute
	busyboxPath    = "/bin/busybox"
	fatalTailLines = 40
)

// Applets linked into the test image; all exist in Debian's busybox-static.
var applets = []string{
	"sh", "ls", "cat", "echo", "stat", "dd", "sleep", "mkdir", "touch", "rm", "id",
	"df", "head", "wc", "sync", "true", "false", "test", "[", "printf", "chown", "chmod",
	"du", "find", "grep", "sha256sum", "tail", "seq", "yes", "mount", "umount", "cp",
	"mv", "ln", "env", "kill", "ps", "uname",
}

// RequireRoot fails the test (it does not skip) when not running as root:
// a missing engine must never turn e2e tests into silent passes.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("e2e tests need root (dockerd, mounts, cgroups): run `go test` as root")
	}
}

// Start starts a private dockerd and imports the busybox test image into it.
// A t.Cleanup stops the engine, kills what is left of it and removes its
// directory.
func Start(t testing.TB, opts Options) *Engine {
	t.Helper()
	RequireRoot(t)
	bin, err := checkTools()
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{opts: opts, bin: bin}
	for try := 0; ; try++ {
		label, err := newLabel(opts.Name)
		if err != nil {
			t.Fatal(err)
		}
		// Keep the directory short: unix socket paths are limited to 108 bytes.
		e.dir, e.label = "/tmp/"+label, label
		err = os.Mkdir(e.dir, 0o755)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || try == 10 {
			t.Fatalf("engine dir: %v", err)
		}
	}
	t.Cleanup(func() {
		if err := e.cleanup(); err != nil {
			t.Errorf("engine %s cleanup: %v", e.label, err)
		}
	})
	// An empty config file keeps a host /etc/docker/daemon.json from leaking in.
	if err := os.WriteFile(e.path("daemon.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	e.start(t)
	if e.version, err = e.serverVersion(); err != nil {
		t.Fatalf("engine %s: %v\ndockerd log:\n%s", e.label, err, e.LogTail(fatalTailLines))
	}
	if err := e.importImage(); err != nil {
		t.Fatalf("import test image: %v\ndockerd log:\n%s", err, e.LogTail(fatalTailLines))
	}
	t.Logf("engine %s ready in %v (live-restore=%v): dockerd %s %s; CLI %s %s", e.label,
		time.Since(began).Round(time.Millisecond), opts.LiveRestore, e.bin.dockerd, e.version, e.bin.docker, e.cliVersion())
	return e
}

// Version is the running engine's version: tests that depend on behaviour
// that changed between Docker releases branch on it.
func (e *Engine) Version() Version { return e.version }

// CLI is the absolute path of the docker CLI used for this engine; tests that
// run other tools (make) against the engine pass it on as DOCKER.
func (e *Engine) CLI() string { return e.bin.docker }

// serverVersion asks dockerd's /version directly: it works whatever API
// version the CLI would negotiate.
func (e *Engine) serverVersion() (Version, error) {
	client := e.httpClient()
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://docker/version")
	if err != nil {
		return Version{}, fmt.Errorf("/version: %w", err)
	}
	defer resp.Body.Close()
	var body struct{ Version, ApiVersion, MinAPIVersion string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return Version{}, fmt.Errorf("/version: %w", err)
	}
	v, err := parseVersion(body.Version)
	v.API, v.MinAPI = body.ApiVersion, body.MinAPIVersion
	return v, err
}

// cliVersion is what `docker --version` prints, for the log.
func (e *Engine) cliVersion() string {
	out, err := exec.Command(e.bin.docker, "--version").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker --version: %v)", err)
	}
	return strings.TrimSpace(string(out))
}

// Host is the DOCKER_HOST value for this engine.
func (e *Engine) Host() string { return "unix://" + e.path("docker.sock") }

// DataRoot is dockerd's --data-root.
func (e *Engine) DataRoot() string { return e.path("data") }

// Image is the busybox test image available in this engine.
func (e *Engine) Image() string { return imageName }

// Docker runs the docker CLI against this engine.
func (e *Engine) Docker(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin.docker, args...)
	cmd.Env = e.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", dockerTimeout, err)
	}
	if err != nil {
		err = fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), err
}

// MustDocker is Docker that fails the test on error; it returns trimmed stdout.
func (e *Engine) MustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := e.Docker(args...)
	if err != nil {
		t.Fatalf("%v\nstderr: %s\nstdout: %s", err, strings.TrimSpace(errOut), strings.TrimSpace(out))
	}
	return strings.TrimSpace(out)
}

// Restart stops dockerd gracefully and starts it again with the same
// data-root and exec-root; opts.LiveRestore applies to the new daemon
// (opts.Name, opts.NS and opts.Env are ignored: the engine keeps its own). Running containers survive only if the old
// daemon had live-restore.
func (e *Engine) Restart(t testing.TB, opts Options) {
	t.Helper()
	began := time.Now()
	if err := e.stop(); err != nil {
		t.Fatalf("restart: %v\ndockerd log:\n%s", err, e.LogTail(fatalTailLines))
	}
	e.mu.Lock()
	e.opts.LiveRestore = opts.LiveRestore
	e.mu.Unlock()
	e.start(t)
	if _, _, err := e.Docker("image", "inspect", imageName); err != nil {
		if err := e.importImage(); err != nil {
			t.Fatalf("import test image: %v", err)
		}
	}
	t.Logf("engine %s restarted in %v (live-restore=%v)", e.label, time.Since(began).Round(time.Millisecond), opts.LiveRestore)
}

// Stop stops dockerd: SIGTERM, then SIGKILL of its process group after 20s.
// It is idempotent. Without live-restore nothing of the engine keeps running
// and its mounts are gone; with live-restore running containers (and their
// shims and mounts) stay, as they would in production.
func (e *Engine) Stop(t testing.TB) {
	t.Helper()
	if err := e.stop(); err != nil {
		t.Fatalf("stop: %v\ndockerd log:\n%s", err, e.LogTail(fatalTailLines))
	}
}

// LogTail returns the last n lines of dockerd's log (all restarts appended).
func (e *Engine) LogTail(n int) string {
	b, err := os.ReadFile(e.path("dockerd.log"))
	if err != nil {
		return fmt.Sprintf("(no dockerd log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *Engine) path(name string) string { return filepath.Join(e.dir, name) }

func (e *Engine) env() []string {
	env := []string{"DOCKER_HOST=" + e.Host(), "DOCKER_CONFIG=" + e.path("cli")}
	for _, kv := range os.Environ() {
		// Drop what could point the CLI at another engine or API version.
		switch strings.SplitN(kv, "=", 2)[0] {
		case "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_API_VERSION":
		default:
			env = append(env, kv)
		}
	}
	return env
}

// start launches dockerd and waits until it answers /_ping.
func (e *Engine) start(t testing.TB) {
	t.Helper()
	if err := e.startErr(); err != nil {
		t.Fatalf("dockerd %s: %v\ndockerd log:\n%s", e.label, err, e.LogTail(fatalTailLines))
	}
}

func (e *Engine) startErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		return errors.New("engine already running")
	}
	logf, err := os.OpenFile(e.path("dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	args := []string{
		e.bin.dockerd,
		"--config-file", e.path("daemon.json"),
		"--data-root", e.DataRoot(),
		"--exec-root", e.path("exec"),
		"--pidfile", e.path("docker.pid"),
		"-H", e.Host(),
		"--containerd-namespace", e.label,
		"--containerd-plugins-namespace", e.label + "-plugins",
		"--cgroup-parent", "/" + e.label,
		"--storage-driver", "overlay2",
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
	}
	if e.opts.LiveRestore {
		args = append(args, "--live-restore")
	}
	if e.opts.NS.Empty() {
		// Own network namespace: --bridge=none in the host namespace would
		// delete the system engine's docker0.
		pre := []string{"unshare", "--net"}
		if e.opts.OwnMountNS {
			pre = append(pre, "--mount", "--propagation", "private")
		}
		args = append(append(pre, "--"), args...)
	} else {
		args = e.opts.NS.Argv(args...)
	}
	fmt.Fprintf(logf, "=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = e.dir
	cmd.Env = append(e.daemonEnv(), e.opts.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // so Stop can kill dockerd's group, and ^C on go test does not hit it
		// If the test binary dies without cleanup, let dockerd shut down too.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	e.cmd, e.done = cmd, done
	return e.waitReady(done)
}

// daemonEnv is dockerd's environment: ours, with the engine's PATH so that
// it starts the containerd, shim and runc that belong to it.
func (e *Engine) daemonEnv() []string {
	env := []string{"PATH=" + e.bin.path}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return env
}

func (e *Engine) httpClient() *http.Client {
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", e.path("docker.sock"))
		}},
	}
}

func (e *Engine) waitReady(exited <-chan struct{}) error {
	client := e.httpClient()
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/_ping: %s", resp.Status)
		}
		select {
		case <-exited:
			return errors.New("dockerd exited during startup")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %v: %v", startTimeout, err)
		}
	}
}

// stop ends dockerd and waits for its containerd, which runs in its own
// session (dockerd starts it with setsid) and dies with dockerd via pdeathsig.
func (e *Engine) stop() error {
	e.mu.Lock()
	cmd, done, live := e.cmd, e.done, e.opts.LiveRestore
	e.cmd, e.done = nil, nil
	e.mu.Unlock()
	if cmd == nil {
		return nil
	}
	var errs []error
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		errs = append(errs, fmt.Errorf("dockerd did not stop within %v after SIGTERM; killed", stopTimeout))
	}
	if err := e.killProcs(func(p proc) bool { return p.daemon }); err != nil {
		errs = append(errs, err)
	}
	// Without live-restore dockerd has stopped every container; anything
	// still mounted is a leftover. With live-restore, running containers
	// keep their rootfs and netns mounts.
	if !live {
		if err := e.unmountAll(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// importImage streams a busybox rootfs as a tar into `docker import`.
func (e *Engine) importImage() error {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeRootfs(pw, bb)) }()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin.docker, "import", "--change", `CMD ["/bin/sh"]`, "-", imageName)
	cmd.Env = e.env()
	cmd.Stdin = pr
	out, err := cmd.CombinedOutput()
	pr.Close()
	if err != nil {
		return fmt.Errorf("docker import: %v: %s", err, out)
	}
	return nil
}

func writeRootfs(w io.Writer, busybox []byte) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	hdr := func(h *tar.Header) error {
		h.ModTime, h.Format = now, tar.FormatPAX
		return tw.WriteHeader(h)
	}
	file := func(name string, mode int64, data []byte) error {
		if err := hdr(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin/", 0o755}, {"etc/", 0o755}, {"root/", 0o700}, {"tmp/", 0o1777}} {
		if err := hdr(&tar.Header{Name: d.name, Mode: d.mode, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	if err := file("bin/busybox", 0o755, busybox); err != nil {
		return err
	}
	for _, a := range applets {
		if err := hdr(&tar.Header{Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, Typeflag: tar.TypeSymlink}); err != nil {
			return err
		}
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")); err != nil {
		return err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")); err != nil {
		return err
	}
	return tw.Close()
}

// checkTools finds the engine's programs and the test image's busybox, and
// says what to install when one is missing: e2e tests must fail, not skip,
// when no engine can start.
func checkTools() (binaries, error) {
	if _, err := exec.LookPath("unshare"); err != nil {
		return binaries{}, fmt.Errorf("cannot start a test Docker engine: unshare not found in PATH; install it: apt-get install -y util-linux")
	}
	b, err := resolveBinaries()
	if err != nil {
		return b, err
	}
	f, err := elf.Open(busyboxPath)
	if err != nil {
		return b, fmt.Errorf("cannot build the test image: %v; install it: apt-get install -y busybox-static", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return b, fmt.Errorf("%s is dynamically linked and cannot run in a bare image; install busybox-static", busyboxPath)
		}
	}
	return b, nil
}

// newLabel makes "stwe-NAME-XXXX" (NAME cut to 8 safe characters) or
// "stwe-XXXXXX"; it names the directory, containerd namespaces and cgroup.
func newLabel(name string) (string, error) {
	var clean strings.Builder
	for _, r := range strings.ToLower(name) {
		if clean.Len() < 8 && (r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			clean.WriteRune(r)
		}
	}
	b := make([]byte, 3)
	if clean.Len() > 0 {
		b = b[:2]
	}
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	if clean.Len() > 0 {
		return "stwe-" + clean.String() + "-" + hex.EncodeToString(b), nil
	}
	return "stwe-" + hex.EncodeToString(b), nil
}
