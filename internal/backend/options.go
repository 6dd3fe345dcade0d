package backend

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Option declares one option of a backend.
type Option struct {
	Name    string `json:"name"`
	Type    Type   `json:"type"`
	Default string `json:"default,omitempty"`
	Help    string `json:"help"`
	// Normalize, if set, checks and normalises the value after its type
	// has (a backend's own grammar, such as sshfs's remote).
	Normalize func(string) (string, error) `json:"-"`
}

// Type is an option's value type; it knows how to validate and normalise.
type Type string

// The option types backends declare.
const (
	TypeString Type = "string"
	TypeID     Type = "id"     // a numeric uid or gid
	TypeMode   Type = "mode"   // octal permission bits
	TypeSize   Type = "size"   // bytes, with units
	TypeBool   Type = "bool"   // true/false
	TypePath   Type = "path"   // an absolute host path; confinement is the backend's job
	TypeName   Type = "volume" // another volume's name
	TypePort   Type = "port"   // a TCP port, 1 to 65535
)

// Common options every backend accepts: ownership and mode of the data's root.
var (
	OptUID  = Option{Name: "uid", Type: TypeID, Help: "numeric owner of the volume's root directory"}
	OptGID  = Option{Name: "gid", Type: TypeID, Help: "numeric group of the volume's root directory"}
	OptMode = Option{Name: "mode", Type: TypeMode, Default: "0755", Help: "octal permissions of the volume's root directory"}
)

// Ownership are the common options every backend starts its list with.
func Ownership() []Option { return []Option{OptUID, OptGID, OptMode} }

func (t Type) normalize(v string) (string, error) {
	switch t {
	case TypeString:
		if strings.ContainsAny(v, "\x00") {
			return "", errors.New("must not contain NUL")
		}
		return v, nil
	case TypeID:
		id, err := ParseID(v)
		return strconv.FormatUint(uint64(id), 10), err
	case TypeMode:
		m, err := ParseMode(v)
		return fmt.Sprintf("%04o", m), err
	case TypeSize:
		n, err := ParseSize(v)
		return strconv.FormatUint(n, 10), err
	case TypeBool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return "", errors.New("must be true or false")
		}
		return strconv.FormatBool(b), nil
	case TypePath:
		if v == "" || v[0] != '/' || strings.ContainsAny(v, "\x00") {
			return "", errors.New("must be an absolute path")
		}
		return v, nil
	case TypeName:
		return v, nil
	case TypePort:
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return "", errors.New("must be a TCP port number from 1 to 65535")
		}
		return strconv.FormatUint(n, 10), nil
	}
	return "", fmt.Errorf("option type %q is unknown", t)
}

// ParseID parses a numeric uid or gid. 4294967295 is (uid_t)-1, which the
// kernel reads as "leave unchanged", so it is refused.
func ParseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return 0, errors.New("must be a number from 0 to 4294967294 (names are not resolved)")
	}
	return uint32(n), nil
}

// ParseMode parses octal permission bits, 0 to 07777.
func ParseMode(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || n > 0o7777 || s == "" {
		return 0, errors.New("must be octal permission bits from 0 to 7777, like 0755")
	}
	return uint32(n), nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
	"p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50,
}

// ParseSize parses a byte count such as 512M, 10G or 1.5GiB (binary units;
// K, KB and KiB are all 1024). Zero, negative, fractional bytes, overflow and
// unknown units are errors.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok || strings.Count(num, ".") > 1 || len(num) > 40 {
		return 0, errors.New("must be a size like 512M, 10G or 1.5GiB")
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, errors.New("must be a size like 512M, 10G or 1.5GiB")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, errors.New("must be a whole number of bytes")
	}
	n := r.Num()
	if n.Sign() <= 0 {
		return 0, errors.New("must be greater than zero")
	}
	if !n.IsUint64() || n.Uint64() > math.MaxInt64 {
		return 0, errors.New("is too large")
	}
	return n.Uint64(), nil
}
