package plugin

import (
	"fmt"
	"net"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// ActivationListener returns the unix listener systemd passed through socket
// activation (LISTEN_FDS), or nil when the process was not socket-activated.
// The socket file belongs to systemd then: the caller must not remove it.
func ActivationListener() (net.Listener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	var first net.Listener
	for _, l := range ls {
		if l == nil {
			continue // not a stream socket
		}
		if _, ok := l.(*net.UnixListener); ok && first == nil {
			first = l
			continue
		}
		l.Close()
	}
	if len(ls) > 0 && first == nil {
		return nil, fmt.Errorf("socket activation passed %d socket(s) but none is a unix stream socket; use ListenStream=/run/docker/plugins/NAME.sock", len(ls))
	}
	if ul, ok := first.(*net.UnixListener); ok {
		// Go would unlink the path on Close; systemd owns it and keeps
		// listening while stowage is down.
		ul.SetUnlinkOnClose(false)
	}
	return first, nil
}

// NotifyReady tells systemd (Type=notify) that stowage serves. Without
// NOTIFY_SOCKET it does nothing.
func NotifyReady() error {
	_, err := daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS=serving")
	return err
}

// NotifyStopping tells systemd that stowage is shutting down.
func NotifyStopping() error {
	_, err := daemon.SdNotify(false, daemon.SdNotifyStopping)
	return err
}
