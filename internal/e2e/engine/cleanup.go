package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// proc is a live (non-zombie) process that belongs to this engine. The system
// engine's processes never match: ours are recognised by our own directory in
// their arguments, our cgroup parent, or a shim of ours as parent.
type proc struct {
	pid       int
	argv      []string
	daemon    bool // our dockerd or its containerd
	shim      bool // a containerd shim of ours
	container bool // a process inside one of our containers or plugins
}

// procs lists this engine's processes.
func (e *Engine) procs() ([]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	type info struct {
		pid, ppid    int
		argv         []string
		byArgs       bool
		inCgroup     bool
		shim, daemon bool
	}
	var all []info
	shims := map[int]bool{}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		ppid, state, ok := readStat(pid)
		if !ok || state == "Z" {
			continue // gone, or a zombie waiting for init: nothing to kill
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		in := info{pid: pid, ppid: ppid, argv: argv}
		in.byArgs = strings.Contains(string(cmdline), e.dir+"/")
		in.inCgroup = e.inCgroup(pid)
		base := filepath.Base(argv[0])
		in.shim = in.byArgs && strings.HasPrefix(base, "containerd-shim")
		in.daemon = in.byArgs && (base == "dockerd" || base == "containerd" || base == "unshare" || base == "nsenter")
		if in.shim {
			shims[pid] = true
		}
		all = append(all, in)
	}
	var out []proc
	for _, in := range all {
		if in.byArgs || in.inCgroup || shims[in.ppid] {
			out = append(out, proc{pid: in.pid, argv: in.argv, daemon: in.daemon, shim: in.shim,
				container: !in.shim && (in.inCgroup || shims[in.ppid])})
		}
	}
	return out, nil
}

// readStat returns the parent pid and state from /proc/PID/stat.
func readStat(pid int) (ppid int, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	// "pid (comm) S ppid ...": comm may contain spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0], err == nil
}

// inCgroup reports whether pid lives under our --cgroup-parent (containers).
func (e *Engine) inCgroup(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[2] == "/"+e.label || strings.HasPrefix(parts[2], "/"+e.label+"/")) {
			return true
		}
	}
	return false
}

// killProcs SIGKILLs our processes selected by match until none is left.
func (e *Engine) killProcs(match func(proc) bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, err := e.procs()
		if err != nil {
			return err
		}
		var left []string
		for _, p := range ps {
			if match(p) {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
				left = append(left, fmt.Sprintf("%d %s", p.pid, strings.Join(p.argv, " ")))
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes survive SIGKILL: %s", strings.Join(left, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mounts lists mount points at or below the engine directory, in the
// engine's mount namespace.
func (e *Engine) mounts() ([]string, error) {
	var ms []*mountinfo.Info
	var err error
	if mnt := e.opts.NS.Mount; mnt != "" {
		// setns(2) into a mount namespace is refused to a threaded process.
		var out []byte
		out, err = exec.Command("nsenter", "--mount="+mnt, "--", "cat", "/proc/self/mountinfo").Output()
		if err != nil {
			return nil, fmt.Errorf("mount table of %s: %w", mnt, err)
		}
		ms, err = mountinfo.GetMountsFromReader(bytes.NewReader(out), mountinfo.PrefixFilter(e.dir))
	} else {
		ms, err = mountinfo.GetMounts(mountinfo.PrefixFilter(e.dir))
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}

// unmountAll detaches every mount below the engine directory, deepest first;
// a few rounds take care of stacked mounts.
func (e *Engine) unmountAll() error {
	for round := 0; ; round++ {
		mps, err := e.mounts()
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		if round == 5 {
			return fmt.Errorf("still mounted: %s", strings.Join(mps, ", "))
		}
		sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
		if mnt := e.opts.NS.Mount; mnt != "" {
			// Errors show up in the next round.
			_ = exec.Command("nsenter", append([]string{"--mount=" + mnt, "--", "umount", "--lazy"}, mps...)...).Run()
			continue
		}
		for _, mp := range mps {
			_ = unix.Unmount(mp, unix.MNT_DETACH) // errors show up in the next round
		}
	}
}

// cleanup tears the engine down once: containers and plugins, daemon,
// leftover processes, mounts, directory, cgroups.
func (e *Engine) cleanup() error {
	e.cleanOnce.Do(func() { e.cleanErr = e.teardown() })
	return e.cleanErr
}

func (e *Engine) teardown() error {
	var errs []error
	e.mu.Lock()
	running := e.cmd != nil
	e.mu.Unlock()
	if !running && e.hasShims() {
		// A live-restore Stop left containers running. Killing their shims
		// would leak sockets in the global /run/containerd/s; a daemon
		// without live-restore cleans them up instead. Kill the containers
		// first, or it waits out their stop timeout.
		if err := e.killProcs(func(p proc) bool { return p.container }); err != nil {
			errs = append(errs, err)
		}
		e.mu.Lock()
		e.opts.LiveRestore = false
		e.mu.Unlock()
		err := e.startErr()
		if err != nil {
			errs = append(errs, fmt.Errorf("start dockerd to stop leftover containers: %w", err))
		}
		running = err == nil
	}
	if running {
		// rm -f kills at once instead of waiting out stop timeouts, and also
		// removes containers that live-restore would keep running.
		if ids := strings.Fields(e.quiet("ps", "-aq")); len(ids) > 0 {
			e.quiet(append([]string{"rm", "-f"}, ids...)...)
		}
		// Managed plugins keep state under the global /run/docker/plugins.
		if ids := strings.Fields(e.quiet("plugin", "ls", "-q")); len(ids) > 0 {
			e.quiet(append([]string{"plugin", "rm", "-f"}, ids...)...)
		}
	}
	if err := e.stop(); err != nil {
		errs = append(errs, err)
	}
	if err := e.killProcs(func(proc) bool { return true }); err != nil {
		errs = append(errs, err)
	}
	if err := e.unmountAll(); err != nil {
		// Never RemoveAll across a mount: it would delete someone else's files.
		errs = append(errs, fmt.Errorf("%v; leaving %s in place", err, e.dir))
	} else if err := os.RemoveAll(e.dir); err != nil {
		errs = append(errs, err)
	}
	if err := e.removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// hasShims reports whether containerd shims of this engine are still alive.
func (e *Engine) hasShims() bool {
	ps, _ := e.procs()
	for _, p := range ps {
		if p.shim {
			return true
		}
	}
	return false
}

// quiet runs docker and returns stdout, ignoring errors (best effort).
func (e *Engine) quiet(args ...string) string {
	out, _, _ := e.Docker(args...)
	return out
}

// removeCgroups removes our (empty by now) --cgroup-parent in every hierarchy.
func (e *Engine) removeCgroups() error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + e.label)
	roots = append(roots, "/sys/fs/cgroup/"+e.label) // cgroup v2
	var errs []error
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // children first
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
