// Package ns names the Linux namespaces an e2e process runs in: files that
// hold a network, mount or UTS namespace (made by `ip netns add` or
// `unshare --mount=FILE`), entered with nsenter. The engine and daemon
// harnesses take a Set to run inside a test-made "node".
package ns

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Set is a group of namespace files; an empty field keeps the caller's
// namespace of that kind.
type Set struct {
	Net   string // e.g. /run/netns/NAME
	Mount string // a file bind-mounted by unshare --mount=FILE
	UTS   string // a file bind-mounted by unshare --uts=FILE
}

// Empty reports whether the set enters no namespace at all.
func (s Set) Empty() bool { return s.Net == "" && s.Mount == "" && s.UTS == "" }

// Argv returns the nsenter command line that runs argv inside the set.
// nsenter execs argv (it forks only for a PID namespace), so the started
// process is argv itself: signals and exit codes are its own.
func (s Set) Argv(argv ...string) []string {
	out := []string{"nsenter"}
	if s.Net != "" {
		out = append(out, "--net="+s.Net)
	}
	if s.Mount != "" {
		out = append(out, "--mount="+s.Mount)
	}
	if s.UTS != "" {
		out = append(out, "--uts="+s.UTS)
	}
	return append(append(out, "--"), argv...)
}

// Holds reports whether process pid lives in the set's network namespace
// (or, without one, its mount namespace): how cleanup finds what a test
// started inside a node, whoever its parent was.
func (s Set) Holds(pid int) bool {
	file, kind := s.Net, "net"
	if file == "" {
		file, kind = s.Mount, "mnt"
	}
	if file == "" {
		return false
	}
	want, err := inode(file)
	if err != nil {
		return false
	}
	got, err := inode(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	return err == nil && got == want
}

// Pids lists the live processes inside the set (see Holds).
func (s Set) Pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			continue // a zombie waits for its parent; it holds nothing
		}
		if s.Holds(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
