// Package config holds the daemon's settings and binds each to a flag and
// its environment twin (STOWAGE_ROOT for --root, …), so a managed plugin
// can set them through its manifest's env.
package config

import (
	"flag"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// EnvPrefix is the prefix of every setting's environment twin.
const EnvPrefix = "STOWAGE_"

// Serve holds `stowage serve`'s settings.
type Serve struct {
	Root            string
	Socket          string
	Group           string
	LogLevel        string
	LogFormat       string
	Scope           string
	DefaultBackend  string
	Backends        string
	ShutdownTimeout time.Duration
}

// EnvName is the environment twin of a flag: --log-level → STOWAGE_LOG_LEVEL.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Binder registers flags whose defaults come from their environment twins.
// Errors in environment values are collected, since flag defaults cannot fail.
type Binder struct {
	FS   *flag.FlagSet
	Env  func(string) (string, bool)
	errs []string
}

// NewBinder binds flags on fs, reading the real environment.
func NewBinder(fs *flag.FlagSet) *Binder { return &Binder{FS: fs, Env: os.LookupEnv} }

// String binds a string flag.
func (b *Binder) String(p *string, name, def, help string) {
	if v, ok := b.Env(EnvName(name)); ok {
		def = v
	}
	b.FS.StringVar(p, name, def, help+" (env "+EnvName(name)+")")
}

// Duration binds a duration flag.
func (b *Binder) Duration(p *time.Duration, name string, def time.Duration, help string) {
	if v, ok := b.Env(EnvName(name)); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.errs = append(b.errs, fmt.Sprintf("%s=%q: %v", EnvName(name), v, err))
		} else {
			def = d
		}
	}
	b.FS.DurationVar(p, name, def, help+" (env "+EnvName(name)+")")
}

// Err reports bad environment values.
func (b *Binder) Err() error {
	if len(b.errs) == 0 {
		return nil
	}
	return fmt.Errorf("bad environment: %s", strings.Join(b.errs, "; "))
}

// Bind registers the serve flags.
func (c *Serve) Bind(b *Binder) {
	b.String(&c.Root, "root", "/var/lib/stowage", "directory holding the state file and every volume's data")
	b.String(&c.Socket, "socket", "stowage", "plugin socket: a bare NAME listens on /run/docker/plugins/NAME.sock (Docker's driver name is NAME); a path is used as is")
	b.String(&c.Group, "group", "root", "group (name or gid) owning the socket; members can use it, which is as good as root")
	b.String(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	b.String(&c.LogFormat, "log-format", "text", "log format: text or json")
	b.String(&c.Scope, "scope", "local", "scope reported to Docker: local, or global for storage shared by every node")
	b.String(&c.DefaultBackend, "default-backend", "dir", "backend for volumes created without -o backend=")
	b.String(&c.Backends, "backends", "", "comma-separated backends to enable (default: every built-in backend that needs no extra setting)")
	b.Duration(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long requests in flight may take to finish")
}

// Logger builds the logger the settings ask for.
func (c *Serve) Logger() (*logrus.Logger, error) {
	l := logrus.New()
	l.Out = os.Stderr
	lvl, err := logrus.ParseLevel(c.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.LogLevel)
	}
	l.SetLevel(lvl)
	switch c.LogFormat {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", c.LogFormat)
	}
	return l, nil
}

// GroupID resolves --group, a name or a numeric gid.
func (c *Serve) GroupID() (int, error) {
	if n, err := strconv.Atoi(c.Group); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(c.Group)
	if err != nil {
		return 0, fmt.Errorf("--group %q: %v", c.Group, err)
	}
	return strconv.Atoi(g.Gid)
}

// EnabledBackends splits --backends, or returns def when it is empty.
func (c *Serve) EnabledBackends(def []string) []string {
	if strings.TrimSpace(c.Backends) == "" {
		return def
	}
	var out []string
	for _, s := range strings.Split(c.Backends, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
