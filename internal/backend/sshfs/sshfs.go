// Package sshfs is the backend whose volumes live on an SSH server, mounted
// with Debian's sshfs (FUSE) on first Mount and unmounted on last. The data
// is the server's: removing a volume forgets it and never deletes remote
// data. Keys come only from the daemon's keys directory and every server's
// host key is checked against the daemon's known_hosts file.
package sshfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/backend"
	"github.com/stowage/stowage/internal/devnode"
	"github.com/stowage/stowage/internal/safefs"
)

// ID is the backend's registered name.
const ID = "sshfs"

// Daemon settings (--ssh-keys-dir, --ssh-known-hosts).
const (
	SettingKeysDir    = "keys_dir"
	SettingKnownHosts = "known_hosts"
)

// Forgets is what Status says about Remove.
const Forgets = "removing the volume forgets it; the remote data is never deleted"

// FSType is the kernel's name for an sshfs mount.
const FSType = "fuse.sshfs"

// How long sshfs may take to connect and mount; ssh gives up connecting
// after ConnectTimeout, so this bounds authentication and a slow server.
const (
	connectTimeout = 5
	mountTimeout   = 30 * time.Second
	// A mount that does not answer a stat within this is reported, not
	// waited for: ssh's keep-alives end a dead connection sooner.
	probeTimeout = 15 * time.Second
)

// Module registers the sshfs backend.
var Module = backend.Module{
	ID:      ID,
	Summary: "a directory on an SSH server, mounted with sshfs while in use; shared storage (every node sees the same data); keys only, host keys checked; removing the volume never deletes the remote data",
	Options: []backend.Option{
		{Name: "remote", Type: backend.TypeString, Normalize: NormalizeRemote,
			Help: "[USER@]HOST:PATH on the SSH server (required): HOST a DNS name, IPv4 address or [IPv6] address, PATH absolute and existing on the server; stowage never creates or deletes remote directories"},
		{Name: "port", Type: backend.TypePort, Default: "22", Help: "the server's SSH port"},
		{Name: "identity", Type: backend.TypeString, Normalize: CheckIdentityName,
			Help: "file name of the private key inside the daemon's --ssh-keys-dir (required); never a path, never key contents; the file must be mode 0600 or stricter"},
		{Name: "uid", Type: backend.TypeID, Help: "show every file as owned by this uid (sshfs -o uid=); nothing changes on the server"},
		{Name: "gid", Type: backend.TypeID, Help: "show every file as owned by this gid (sshfs -o gid=); nothing changes on the server"},
		{Name: "mode", Type: backend.TypeMode, Help: "show every file and directory with these permission bits, 0 to 0777 (sshfs -o umask=); the kernel enforces them in containers; nothing changes on the server"},
	},
	Refused: []backend.Refused{{Name: "password",
		Why: "sshfs volumes authenticate with keys only: a password would sit in stowage's state and in Docker's volume metadata, readable by anyone who can inspect the volume; put a private key in the daemon's --ssh-keys-dir and pass -o identity=NAME"}},
	DisabledUnless: SettingKeysDir,
	Shared:         true,
	New:            newSSHFS,
}

// spawnFunc starts argv detached, its output going to out; done yields
// its exit, kill ends it and its children. Tests replace it.
type spawnFunc func(argv []string, out *os.File) (done <-chan error, kill func(), err error)

// SSHFS is the provisioned backend.
type SSHFS struct {
	dir        string
	keysDir    string
	knownHosts string
	bin        string
	log        logrus.FieldLogger
	spawn      spawnFunc
}

var (
	_ backend.Backend  = (*SSHFS)(nil)
	_ backend.Statuser = (*SSHFS)(nil)
	_ backend.Occupier = (*SSHFS)(nil)
	_ backend.Prober   = (*SSHFS)(nil)
)

func newSSHFS(env backend.Env) (backend.Backend, error) {
	keys, err := settingPath("--ssh-keys-dir", env.Settings[SettingKeysDir], true)
	if err != nil {
		return nil, err
	}
	if env.Settings[SettingKnownHosts] == "" {
		return nil, errors.New("--ssh-known-hosts is needed with --ssh-keys-dir: stowage checks every server's host key against that file and never trusts a key on first use (fill it with ssh-keyscan -p PORT HOST >> FILE, and check the fingerprints)")
	}
	known, err := settingPath("--ssh-known-hosts", env.Settings[SettingKnownHosts], false)
	if err != nil {
		return nil, err
	}
	if _, err := readKnownHosts(known); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("sshfs")
	if err != nil {
		return nil, errors.New("the sshfs program is not installed (Debian: apt-get install sshfs)")
	}
	// A managed plugin's /dev has no fuse node; on a host this finds it.
	if err := devnode.Ensure("/dev/fuse", "/sys/class/misc/fuse/dev", false, unix.Mkdev(10, 229), 0o666); err != nil {
		return nil, fmt.Errorf("sshfs needs /dev/fuse: %v (is the fuse module loaded? modprobe fuse)", err)
	}
	log := env.Log
	if log == nil {
		log = logrus.New()
	}
	return &SSHFS{dir: env.Dir, keysDir: keys, knownHosts: known, bin: bin, log: log, spawn: spawnDetached}, nil
}

// settingPath checks a daemon path setting: absolute, resolvable, of the
// right kind, and free of what sshfs's -o parser or ssh's token expansion
// would read specially (',', '\', '%', '~', whitespace).
func settingPath(flag, p string, dir bool) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s %q must be an absolute path", flag, p)
	}
	res, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	for _, c := range res {
		if c < 0x21 || c > 0x7e || strings.ContainsRune(",\\%~\"'", c) {
			return "", fmt.Errorf("%s %q must not contain spaces, control characters or any of , \\ %% ~ quotes (ssh and sshfs would read them specially)", flag, res)
		}
	}
	fi, err := os.Stat(res)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	if dir && !fi.IsDir() {
		return "", fmt.Errorf("%s %s is not a directory", flag, res)
	}
	if !dir && !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s is not a regular file", flag, res)
	}
	return res, nil
}

func (s *SSHFS) path(name string) string    { return filepath.Join(s.dir, name) }
func (s *SSHFS) logPath(name string) string { return filepath.Join(s.dir, "."+name+".sshfs.log") }

// Validate requires remote and identity, and keeps mode to what a umask
// can express.
func (s *SSHFS) Validate(opts backend.Options) error {
	if opts["remote"] == "" {
		return fmt.Errorf("option remote is required for backend %q (like -o remote=root@fileserver:/srv/volumes/NAME)", ID)
	}
	if opts["identity"] == "" {
		return fmt.Errorf("option identity is required for backend %q: the file name of a private key in the daemon's --ssh-keys-dir %s", ID, s.keysDir)
	}
	if m, err := backend.ParseMode(opts["mode"]); opts["mode"] != "" && (err != nil || m > 0o777) {
		return fmt.Errorf("option mode=%s: sshfs can show permission bits 0 to 0777 only (no setuid, setgid or sticky)", opts["mode"])
	}
	return nil
}

// Create checks, locally and without touching the network, that the key
// file is usable and the server's host key is known; then makes the empty
// mount point.
func (s *SSHFS) Create(_ context.Context, vol *backend.Volume, opts backend.Options) error {
	if err := s.checkAccess(opts); err != nil {
		return fmt.Errorf("%v; nothing was created", err)
	}
	return backend.MakeMountPoint(s.path(vol.Name))
}

// Occupied refuses what Create would refuse: anything at the mount point
// but an empty directory. Undoing a cut Create only removes that empty
// mount point; nothing on the server is ever touched.
func (s *SSHFS) Occupied(vol *backend.Volume) error {
	return backend.RefuseLeftover(s.path(vol.Name), "mount point")
}

// Up reports whether an sshfs is mounted at the volume's mount point, from
// the mount table: a stat could hang on a dead server.
func (s *SSHFS) Up(vol *backend.Volume) bool {
	m, err := mountAt(s.path(vol.Name))
	return err == nil && m != nil
}

// checkAccess is what Create and Activate check before any connection.
func (s *SSHFS) checkAccess(opts backend.Options) error {
	if _, err := s.identityFile(opts["identity"]); err != nil {
		return err
	}
	r, err := ParseRemote(opts["remote"])
	if err != nil {
		return fmt.Errorf("option remote: %v", err)
	}
	return s.checkKnownHost(r.Host, opts["port"])
}

// identityFile checks the key file NAME in the keys directory: a regular
// file, not a symlink (which could point anywhere), private to its owner.
func (s *SSHFS) identityFile(name string) (string, error) {
	if _, err := CheckIdentityName(name); err != nil {
		return "", fmt.Errorf("option identity=%q: %v", name, err)
	}
	p := filepath.Join(s.keysDir, name)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", fmt.Errorf("option identity=%q: there is no key file %s in the daemon's --ssh-keys-dir; put the private key there (chmod 600)", name, p)
	case errors.Is(err, unix.ELOOP):
		return "", fmt.Errorf("option identity=%q: %s is a symlink; put the key file itself in --ssh-keys-dir", name, p)
	case err != nil:
		return "", fmt.Errorf("option identity=%q: opening %s: %v", name, p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("option identity=%q: %v", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("option identity=%q: %s is not a regular file", name, p)
	}
	if st.Mode&0o077 != 0 {
		return "", fmt.Errorf("option identity=%q: key file %s is readable by group or others (mode %04o) and ssh refuses such keys; chmod 600 it", name, p, st.Mode&0o7777)
	}
	return p, nil
}

// Mountpoint is the volume's directory under the backend's, named after
// the volume, never after the remote.
func (s *SSHFS) Mountpoint(vol *backend.Volume) string { return s.path(vol.Name) }

// Argv is the sshfs command line for vol: no shell, every ssh setting
// explicit, ~/.ssh/config ignored, no prompt ever (BatchMode).
func (s *SSHFS) Argv(vol *backend.Volume) ([]string, error) {
	opts := vol.Options
	key, err := s.identityFile(opts["identity"])
	if err != nil {
		return nil, err
	}
	r, err := ParseRemote(opts["remote"])
	if err != nil {
		return nil, fmt.Errorf("option remote: %v", err)
	}
	port := opts["port"]
	if port == "" {
		port = "22"
	}
	argv := []string{s.bin, "-v", r.String(), s.path(vol.Name), "-p", port, "-F", "/dev/null"}
	for _, o := range []string{
		"IdentityFile=" + key, "IdentitiesOnly=yes", "BatchMode=yes",
		"StrictHostKeyChecking=yes", "UserKnownHostsFile=" + s.knownHosts, "GlobalKnownHostsFile=/dev/null", "UpdateHostKeys=no",
		"ConnectTimeout=" + strconv.Itoa(connectTimeout),
		// A dead server ends the connection after 3 unanswered
		// keep-alives 2 s apart; reconnect then fails each request
		// with EIO until the server is back, and recovers after.
		"ServerAliveInterval=2", "ServerAliveCountMax=3", "reconnect",
		// Containers run as any uid; the kernel checks permissions
		// against what the mount shows.
		"allow_other", "default_permissions",
	} {
		argv = append(argv, "-o", o)
	}
	if v := opts["uid"]; v != "" {
		argv = append(argv, "-o", "uid="+v)
	}
	if v := opts["gid"]; v != "" {
		argv = append(argv, "-o", "gid="+v)
	}
	if v := opts["mode"]; v != "" {
		m, err := backend.ParseMode(v)
		if err != nil || m > 0o777 {
			return nil, fmt.Errorf("option mode=%s: permission bits 0 to 0777 only", v)
		}
		argv = append(argv, "-o", fmt.Sprintf("umask=%03o", 0o777&^m))
	}
	return argv, nil
}

// mountAt is the topmost mount exactly at p, or nil. It reads the mount
// table only: a stat of a dead FUSE mount could block.
func mountAt(p string) (*mountinfo.Info, error) {
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(filepath.Clean(p)))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	if len(infos) == 0 {
		return nil, nil
	}
	return infos[len(infos)-1], nil
}

// Activate mounts the remote unless sshfs already serves the mount point
// (after a stowage restart: the sshfs process outlives stowage, and the
// mount is adopted). A mount whose sshfs died is cleared and made again.
func (s *SSHFS) Activate(ctx context.Context, vol *backend.Volume) error {
	p := s.path(vol.Name)
	log := s.log.WithFields(logrus.Fields{"op": "Mount", "volume": vol.Name, "remote": vol.Options["remote"]})
	m, err := mountAt(p)
	if err != nil {
		return err
	}
	if m != nil {
		if m.FSType != FSType {
			return fmt.Errorf("%s is mounted at its mount point %s, not sshfs; stowage did not mount it and leaves it alone: unmount it, then mount the volume again", m.FSType, p)
		}
		err := probe(ctx, p)
		if err == nil {
			log.Info("sshfs already serves the mount point; adopting it")
			return nil
		}
		// A FUSE mount whose server process is gone answers ENOTCONN,
		// or ECONNABORTED while the kernel is still tearing it down.
		if !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) {
			return fmt.Errorf("its sshfs mount at %s does not answer (%v): the server %s may be down; try again when it is back", p, err, s.hostPort(vol))
		}
		// Its sshfs process is gone: only the kernel's half remains.
		log.Warn("the sshfs process of this mount is gone; clearing the dead mount and mounting again")
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("clearing the dead sshfs mount at %s: %w", p, err)
		}
	}
	if err := safefs.EmptyDir(p); err != nil {
		return fmt.Errorf("its mount point %s is not an empty directory (%v); nothing was mounted: inspect it, or remove the volume and create it again", p, err)
	}
	if err := s.checkAccess(vol.Options); err != nil {
		return fmt.Errorf("%v; nothing was mounted", err)
	}
	argv, err := s.Argv(vol)
	if err != nil {
		return err
	}
	return s.mount(ctx, vol, argv, log)
}

// mount runs sshfs and waits for it: sshfs mounts, connects, checks the
// remote path, and only then forks its daemon into a session of its own
// (so it outlives stowage, kill -9 included) and exits 0. -v keeps ssh's
// stderr, which goes to the volume's log file for explain.
func (s *SSHFS) mount(ctx context.Context, vol *backend.Volume, argv []string, log logrus.FieldLogger) error {
	start := time.Now()
	p := s.path(vol.Name)
	out, err := os.OpenFile(s.logPath(vol.Name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("opening the sshfs log: %w", err)
	}
	defer out.Close() // sshfs holds its own descriptor
	done, kill, err := s.spawn(argv, out)
	if err != nil {
		return fmt.Errorf("starting sshfs: %w; nothing was mounted", err)
	}
	ctx, cancel := context.WithTimeout(ctx, mountTimeout)
	defer cancel()
	select {
	case werr := <-done:
		m, _ := mountAt(p)
		up := m != nil && m.FSType == FSType
		if werr == nil && up {
			log.WithField("duration", time.Since(start)).Info("sshfs mounted")
			return nil
		}
		if up {
			// Failed after mounting: leave nothing half up.
			unix.Unmount(p, unix.MNT_DETACH)
		}
		if werr == nil {
			werr = errors.New("it exited without mounting")
		}
		return s.explain(vol, werr)
	case <-ctx.Done():
		kill()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		if m, _ := mountAt(p); m != nil && m.FSType == FSType {
			unix.Unmount(p, unix.MNT_DETACH)
		}
		return fmt.Errorf("sshfs did not mount %s within %s (%s); it was stopped and nothing is mounted", vol.Options["remote"], mountTimeout, lastLines(s.logPath(vol.Name)))
	}
}

// probe asks the mount's sshfs for statfs, which the kernel never caches
// (a stat may be answered from cached attributes of a dead mount), giving
// up after probeTimeout: a hung FUSE server must not hang Mount.
func probe(ctx context.Context, p string) error {
	res := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		res <- unix.Statfs(p, &st)
	}()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s", probeTimeout)
	}
}

func (s *SSHFS) hostPort(vol *backend.Volume) string {
	r, _ := ParseRemote(vol.Options["remote"])
	return knownHostsName(r.Host, vol.Options["port"])
}

// explain turns a failed sshfs into an error a Docker user can act on,
// from what ssh and sshfs wrote.
func (s *SSHFS) explain(vol *backend.Volume, werr error) error {
	text := readLog(s.logPath(vol.Name))
	r, _ := ParseRemote(vol.Options["remote"])
	host := knownHostsName(r.Host, vol.Options["port"])
	port := vol.Options["port"]
	var why string
	switch {
	case strings.Contains(text, "REMOTE HOST IDENTIFICATION HAS CHANGED") || strings.Contains(text, "has changed and you have requested strict checking"):
		why = fmt.Sprintf("the host key of %s does not match the one in %s: the server was reinstalled or re-keyed, or someone is intercepting the connection. If the change is expected, check the new key's fingerprint, then replace it: ssh-keygen -f %s -R '%s'; ssh-keyscan -p %s %s >> %s", host, s.knownHosts, s.knownHosts, host, port, r.Host, s.knownHosts)
	case strings.Contains(text, "Host key verification failed"):
		why = fmt.Sprintf("ssh could not verify the host key of %s against %s (it holds no key of the type the server offers?): add the server's key with ssh-keyscan -p %s %s >> %s, after checking its fingerprint", host, s.knownHosts, port, r.Host, s.knownHosts)
	case strings.Contains(text, "Permission denied"):
		user := r.User
		if user == "" {
			user = "(the daemon's own user)"
		}
		why = fmt.Sprintf("%s refused the key %s for user %s: add its public key to that user's authorized_keys on the server", host, vol.Options["identity"], user)
	case strings.Contains(text, "Connection refused"), strings.Contains(text, "timed out"), strings.Contains(text, "No route to host"),
		strings.Contains(text, "Network is unreachable"), strings.Contains(text, "Could not resolve hostname"), strings.Contains(text, "Connection closed"):
		why = fmt.Sprintf("cannot reach the SSH server %s port %s (%s)", r.Host, port, lastLines(s.logPath(vol.Name)))
	case strings.Contains(text, "No such file or directory"):
		why = fmt.Sprintf("the remote directory %s does not exist on %s: create it on the server (stowage never creates or deletes remote directories)", r.Path, r.Host)
	default:
		why = fmt.Sprintf("sshfs failed (%v): %s", werr, lastLines(s.logPath(vol.Name)))
	}
	return fmt.Errorf("%s; nothing was mounted", why)
}

// readLog reads the head of a sshfs log, bounded.
func readLog(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	return string(b)
}

// lastLines is the last few meaningful lines of a sshfs log, one line,
// printable, bounded: it goes into an error message.
func lastLines(p string) string {
	var keep []string
	for _, l := range strings.Split(readLog(p), "\n") {
		l = strings.TrimSpace(strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, l))
		if l != "" && !strings.HasPrefix(l, "@@@") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 3 {
		keep = keep[len(keep)-3:]
	}
	out := strings.Join(keep, " / ")
	if len(out) > 400 {
		out = out[len(out)-400:]
	}
	if out == "" {
		return "no output"
	}
	return out
}

// Deactivate unmounts the volume's sshfs mount; sshfs then exits. It never
// unmounts what is not an sshfs mount: stowage did not make it.
func (s *SSHFS) Deactivate(_ context.Context, vol *backend.Volume) error {
	p := s.path(vol.Name)
	m, err := mountAt(p)
	if err != nil || m == nil {
		return err
	}
	if m.FSType != FSType {
		return fmt.Errorf("%s is mounted at its mount point %s, not sshfs; stowage did not mount it and leaves it alone", m.FSType, p)
	}
	err = unix.Unmount(p, 0)
	if errors.Is(err, unix.EBUSY) {
		// Something still has files open (a container stuck on a dead
		// server): detach, so the mount goes once they let go.
		s.log.WithFields(logrus.Fields{"op": "Unmount", "volume": vol.Name}).Warn("the sshfs mount is busy; detaching it lazily")
		err = unix.Unmount(p, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmounting the sshfs mount at %s: %w", p, err)
	}
	return nil
}

// Remove forgets the volume: it removes the empty mount point and its log,
// never anything on the server and never through a mount.
func (s *SSHFS) Remove(_ context.Context, vol *backend.Volume) error {
	p := s.path(vol.Name)
	if err := safefs.RefuseMounted(p); err != nil {
		return err
	}
	if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("its mount point %s holds files, which are not on the server (written while it was not mounted?); nothing was removed: move them away, then remove the volume again", p)
		}
		return fmt.Errorf("removing its mount point %s: %w", p, err)
	}
	if err := safefs.SyncRemoved(p); err != nil {
		return err
	}
	if err := os.Remove(s.logPath(vol.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.WithFields(logrus.Fields{"op": "Remove", "volume": vol.Name, "error": err}).Warn("removing the sshfs log")
	}
	return nil
}

// Inventory compares mount points with the records and reports volumes
// whose ledger counts mounts but whose sshfs mount is gone. It reads the
// mount table only: it never stats a mount that could hang.
func (s *SSHFS) Inventory(context.Context) (backend.InventoryRun, error) {
	d, err := backend.InventoryDir(s.dir, nil)
	if err != nil {
		return nil, err
	}
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(s.dir))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	types := map[string]string{}
	for _, m := range infos {
		types[m.Mountpoint] = m.FSType
	}
	return &sshfsInventory{DirInventory: d, s: s, types: types}, nil
}

type sshfsInventory struct {
	*backend.DirInventory
	s *SSHFS
	// types are the filesystem types mounted under the backend's directory.
	types map[string]string
}

func (r *sshfsInventory) Known(vols []*backend.Volume) {
	r.DirInventory.Known(vols)
	for _, v := range vols {
		t, mounted := r.types[r.s.path(v.Name)]
		switch n := v.ActiveMounts(); {
		case mounted && t != FSType:
			r.Problem(fmt.Sprintf("volume %q: %s is mounted at its mount point, not sshfs; stowage leaves it alone", v.Name, t))
		case n > 0 && !mounted:
			r.Problem(fmt.Sprintf("volume %q: its ledger holds %d mount(s) but its sshfs mount is gone (sshfs killed, or unmounted behind stowage's back); containers using it get I/O errors: restart them to mount it again", v.Name, n))
		}
	}
}

// Status says where the data is and that Remove keeps it. It reads only
// the record: Get must answer while the server is down.
func (s *SSHFS) Status(vol *backend.Volume) map[string]interface{} {
	return map[string]interface{}{"remote": vol.Options["remote"], "remove": Forgets}
}

// spawnDetached starts argv in a session of its own (sshfs's daemon then
// makes another), stdin from /dev/null
// and output to out (a file, never a pipe: a pipe to a dead stowage would
// kill sshfs with SIGPIPE), with a minimal environment: no ssh agent.
func spawnDetached(argv []string, out *os.File) (<-chan error, func(), error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Dir = "/"
	home := os.Getenv("HOME")
	if home == "" {
		home = "/root"
	}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home, "LANG=C", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	// Reaps sshfs whenever it exits, on failure now or at unmount later.
	go func() { done <- cmd.Wait() }()
	pid := cmd.Process.Pid
	return done, func() { unix.Kill(-pid, unix.SIGKILL) }, nil
}
