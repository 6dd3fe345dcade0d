package driver

import (
	"fmt"
	"strconv"
)

// MaxNameLen bounds volume names: they become file names (255 bytes at most)
// with room for a backend's suffix.
const MaxNameLen = 200

// MaxMountIDLen bounds mount IDs; Docker's are 64 hex characters.
const MaxMountIDLen = 128

// ValidateName applies Docker's volume-name rule, [a-zA-Z0-9][a-zA-Z0-9_.-]*,
// with a bounded length. The engine does not check plugin volume names, so
// this is what stands between a request and the disk.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("volume name is empty")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("volume name is %d bytes long; the limit is %d", len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := isAlnum(c) || (i > 0 && (c == '_' || c == '.' || c == '-'))
		if !ok {
			return fmt.Errorf("volume name %s is invalid: at byte %d %s; names match [a-zA-Z0-9][a-zA-Z0-9_.-]*", strconv.Quote(name), i, describe(c, i))
		}
	}
	return nil
}

// ValidateMountID checks a mount ID is a short token of [a-zA-Z0-9_.:-].
func ValidateMountID(id string) error {
	if id == "" {
		return fmt.Errorf("mount ID is empty (Docker sends one with every Mount and Unmount)")
	}
	if len(id) > MaxMountIDLen {
		return fmt.Errorf("mount ID is %d bytes long; the limit is %d", len(id), MaxMountIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '_' && c != '.' && c != '-' && c != ':' {
			return fmt.Errorf("mount ID %s is invalid at byte %d", strconv.Quote(id), i)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func describe(c byte, i int) string {
	switch {
	case c == '/':
		return "a '/' (names are not paths)"
	case c == 0:
		return "a NUL byte"
	case c < 0x20 || c == 0x7f:
		return "a control character"
	case c >= 0x80:
		return "a non-ASCII byte"
	case i == 0:
		return fmt.Sprintf("%q (a name must start with a letter or digit)", c)
	}
	return fmt.Sprintf("%q", c)
}
