package devnode

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEnsureMakesTheNodeSysfsNames(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mknod)")
	}
	dir := t.TempDir()
	sys := filepath.Join(dir, "dev")
	os.WriteFile(sys, []byte("1:3\n"), 0o644)
	node := filepath.Join(dir, "null")
	if err := Ensure(node, sys, false, unix.Mkdev(9, 9), 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) || st.Mode&0o777 != 0o600 {
		t.Fatalf("node mode %o rdev %d:%d, want a 0600 char device 1:3", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	// Something already there is left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	if err := Ensure(file, sys, true, 0, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Fatal("Ensure replaced an existing file")
	}
	// No sysfs entry: the fallback number.
	blk := filepath.Join(dir, "blk")
	if err := Ensure(blk, filepath.Join(dir, "missing"), true, unix.Mkdev(7, 42), 0o660); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(blk, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(7, 42) {
		t.Fatalf("fallback node: %v mode %o rdev %d:%d", err, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
}
