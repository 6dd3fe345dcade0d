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
	// Issue 3: backend settings.
	BindRoots        string
	ImageDefaultSize string
	// Issue 10: sshfs.
	SSHKeysDir    string
	SSHKnownHosts string
	// Issue 5: operations.
	MetricsAddr string
	ExposeDir   string
	TCPAddr     string
	TLSCert     string
	TLSKey      string
	TLSCA       string
	SpecDir     string
	// Issue 4: where the kernel boot ID is read (tests simulate a reboot).
	BootIDFile string
	// Issue 13: the web view, and per-volume usage gauges.
	UIAddr             string
	MetricsVolumeUsage bool
	// Swarm on legacy plugins: make dockerd look the driver up at once.
	AnnounceTo string
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

// EnvUnprefixed, set to 1, makes the binder also read each setting under its
// bare name (LOG_LEVEL for --log-level) when the STOWAGE_ twin is unset. A
// managed plugin's config.json sets it, so `docker plugin set stowage
// LOG_LEVEL=debug` works; elsewhere bare names are ignored, since a host
// environment is full of unrelated ones.
const EnvUnprefixed = "STOWAGE_ENV_UNPREFIXED"

// lookup reads a flag's environment twin, then its bare name if enabled.
func (b *Binder) lookup(name string) (string, string, bool) {
	if v, ok := b.Env(EnvName(name)); ok {
		return EnvName(name), v, true
	}
	if u, _ := b.Env(EnvUnprefixed); u == "1" {
		bare := strings.TrimPrefix(EnvName(name), EnvPrefix)
		if v, ok := b.Env(bare); ok {
			return bare, v, true
		}
	}
	return "", "", false
}

// String binds a string flag.
func (b *Binder) String(p *string, name, def, help string) {
	if _, v, ok := b.lookup(name); ok {
		def = v
	}
	b.FS.StringVar(p, name, def, help+" (env "+EnvName(name)+")")
}

// Duration binds a duration flag.
func (b *Binder) Duration(p *time.Duration, name string, def time.Duration, help string) {
	if env, v, ok := b.lookup(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.errs = append(b.errs, fmt.Sprintf("%s=%q: %v", env, v, err))
		} else {
			def = d
		}
	}
	b.FS.DurationVar(p, name, def, help+" (env "+EnvName(name)+")")
}

// Bool binds a boolean flag; its environment twin takes strconv's forms
// (1, true, 0, false, …).
func (b *Binder) Bool(p *bool, name string, def bool, help string) {
	if env, v, ok := b.lookup(name); ok {
		x, err := strconv.ParseBool(v)
		if err != nil {
			b.errs = append(b.errs, fmt.Sprintf("%s=%q: use true or false", env, v))
		} else {
			def = x
		}
	}
	b.FS.BoolVar(p, name, def, help+" (env "+EnvName(name)+")")
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
	b.String(&c.Scope, "scope", "", "scope reported to Docker: local, or global for storage every node shares; default global when every enabled backend is shared storage (sshfs), else local. global with a node-local backend enabled is refused")
	b.String(&c.DefaultBackend, "default-backend", "", "backend for volumes created without -o backend= (default: dir, or the only enabled backend when just one is)")
	b.String(&c.Backends, "backends", "", "comma-separated backends to enable (default: every built-in backend that needs no extra setting, plus bind when --bind-roots is given)")
	b.Duration(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long requests in flight may take to finish")
	b.String(&c.BindRoots, "bind-roots", "", "comma-separated host directories whose subdirectories bind volumes may adopt; the bind backend is enabled only with them")
	b.String(&c.SSHKeysDir, "ssh-keys-dir", "", "directory of private keys sshfs volumes name with -o identity=FILE; the sshfs backend is enabled only with it (and --ssh-known-hosts)")
	b.String(&c.SSHKnownHosts, "ssh-known-hosts", "", "known_hosts file every sshfs server's host key is checked against (strictly: unknown or changed keys are refused)")
	b.String(&c.ImageDefaultSize, "image-default-size", "", "size of image volumes created without -o size= (default: size is required)")
	b.String(&c.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics, /healthz and /readyz on a loopback HOST:PORT or unix:/path (default: off)")
	b.String(&c.ExposeDir, "expose-dir", "", "bind-mount each mounted volume at DIR/NAME and hand that path to Docker (managed plugin: its propagatedMount)")
	b.String(&c.TCPAddr, "tcp-addr", "", "also serve the plugin API over TCP with TLS on HOST:PORT and write SPEC-DIR/NAME.json for Docker (needs --tls-cert, --tls-key, --tls-ca)")
	b.String(&c.TLSCert, "tls-cert", "", "server certificate (PEM) for --tcp-addr")
	b.String(&c.TLSKey, "tls-key", "", "server key (PEM) for --tcp-addr")
	b.String(&c.TLSCA, "tls-ca", "", "CA (PEM) that client certificates must chain to, for --tcp-addr")
	b.String(&c.SpecDir, "spec-dir", "/etc/docker/plugins", "where --tcp-addr writes NAME.json for dockerd's plugin discovery")
	b.String(&c.UIAddr, "ui-addr", "", "serve the read-only web view of volumes, usage and health on a loopback HOST:PORT or unix:/path; may equal --metrics-addr to share its listener (default: off)")
	b.Bool(&c.MetricsVolumeUsage, "metrics-volume-usage", false, "with --metrics-addr, also export stowage_volume_used_bytes and stowage_volume_size_limit_bytes per volume (two series per volume; read at scrape time with statfs or a quota query)")
	b.String(&c.AnnounceTo, "announce-to", "unix:///var/run/docker.sock", "dockerd API socket to make look the driver up as soon as both run (and again after each dockerd restart), so Swarm sees it on this node before any volume is used; empty: never call dockerd (a managed plugin needs none)")
	b.String(&c.BootIDFile, "boot-id-file", "/proc/sys/kernel/random/boot_id", "file holding the kernel boot ID that dates mount-ledger entries; change it only for testing or in containers")
}

// BackendSettings are the daemon settings addressed to each backend, by
// backend ID and setting name.
func (c *Serve) BackendSettings() map[string]map[string]string {
	return map[string]map[string]string{
		"bind":  {"roots": c.BindRoots},
		"image": {"default_size": c.ImageDefaultSize},
		"sshfs": {"keys_dir": c.SSHKeysDir, "known_hosts": c.SSHKnownHosts},
	}
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
