package engine

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// EnvEngine names the environment variable that picks the engine under test:
// a directory laid out like an unpacked Debian package (DIR/usr/sbin/dockerd,
// DIR/usr/bin/docker, containerd, containerd-shim-runc-v2, runc, docker-init,
// docker-proxy). scripts/engines.sh makes one. Unset, the system's dockerd
// and docker found in PATH are used.
const EnvEngine = "STOWAGE_ENGINE"

// binaries are the programs of one engine.
type binaries struct {
	dir     string // the STOWAGE_ENGINE directory; "" for the system's engine
	dockerd string // absolute path
	docker  string // the CLI used for this engine, absolute path
	path    string // PATH for dockerd: where it finds containerd, runc, docker-init, docker-proxy
}

// resolveBinaries finds the engine selected by STOWAGE_ENGINE, or the
// system's, and says what to install when a piece is missing: e2e tests must
// fail, not skip, when no engine can start.
func resolveBinaries() (binaries, error) {
	sysPath := os.Getenv("PATH")
	b := binaries{dir: os.Getenv(EnvEngine), path: sysPath}
	if b.dir != "" {
		dir, err := filepath.Abs(b.dir)
		if err != nil {
			return b, err
		}
		if _, err := os.Stat(filepath.Join(dir, "usr", "sbin", "dockerd")); err != nil {
			return b, fmt.Errorf("%s=%s holds no engine (%v); make one with scripts/engines.sh", EnvEngine, b.dir, err)
		}
		b.dir = dir
		// The engine's own directories first, so that its dockerd starts
		// its own containerd, shim and runc, not the system's.
		b.path = strings.Join([]string{filepath.Join(dir, "usr", "sbin"), filepath.Join(dir, "usr", "bin"), sysPath}, ":")
	}
	tools := []struct{ bin, pkg string }{
		{"dockerd", "docker.io"},
		{"docker", "docker.io (or docker-ce-cli)"},
		{"containerd", "containerd (comes with docker.io)"},
		{"runc", "runc (comes with docker.io)"},
	}
	found := map[string]string{}
	for _, tool := range tools {
		p, err := lookPath(tool.bin, b.path)
		if err != nil {
			if b.dir != "" {
				return b, fmt.Errorf("cannot start the Docker engine in %s=%s: %s not found there or in PATH", EnvEngine, b.dir, tool.bin)
			}
			return b, fmt.Errorf("cannot start a test Docker engine: %s not found in PATH; install it: apt-get install -y %s", tool.bin, tool.pkg)
		}
		found[tool.bin] = p
	}
	b.dockerd, b.docker = found["dockerd"], found["docker"]
	if b.dir != "" {
		// The CLI of the engine under test, never a newer or older one
		// that happens to come first in PATH.
		b.docker = filepath.Join(b.dir, "usr", "bin", "docker")
		if _, err := os.Stat(b.docker); err != nil {
			return b, fmt.Errorf("%s=%s has no docker CLI: %v", EnvEngine, b.dir, err)
		}
	}
	return b, nil
}

// lookPath is exec.LookPath over the given PATH list.
func lookPath(name, pathList string) (string, error) {
	for _, d := range filepath.SplitList(pathList) {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return filepath.Abs(p)
		}
	}
	return "", &fs.PathError{Op: "lookPath", Path: name, Err: fs.ErrNotExist}
}

// Version is a Docker engine's version, as its API reports it
// ("28.5.2+dfsg4" is 28.5.2).
type Version struct {
	Major, Minor, Patch int
	Raw                 string // the server's Version string
	API                 string // the server's API version
	MinAPI              string // the oldest API version it still serves
}

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

func (v Version) String() string { return v.Raw + " (API " + v.API + ", min " + v.MinAPI + ")" }

func parseVersion(raw string) (Version, error) {
	v := Version{Raw: raw}
	num := raw
	if i := strings.IndexAny(num, "+-~ "); i >= 0 {
		num = num[:i]
	}
	parts := strings.Split(num, ".")
	if len(parts) < 2 {
		return v, fmt.Errorf("engine version %q is not MAJOR.MINOR[.PATCH]", raw)
	}
	var err error
	for i, dst := range []*int{&v.Major, &v.Minor, &v.Patch} {
		if i >= len(parts) {
			break
		}
		if *dst, err = strconv.Atoi(parts[i]); err != nil {
			return v, fmt.Errorf("engine version %q: %w", raw, err)
		}
	}
	return v, nil
}
