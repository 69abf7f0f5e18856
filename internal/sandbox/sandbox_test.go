package sandbox

import (
	"os"
	"os/exec"
	"testing"
)

func init() {
	// As safefsd does: during initialization, on the main thread, whose
	// status /proc/self/status shows.
	if os.Getenv("SANDBOX_CHILD") == "1" {
		SetNoNewPrivs()
	}
}

// TestConfine runs Confine in a child process (it cannot be undone) and
// checks the child's view of itself.
func TestConfine(t *testing.T) {
	if os.Getenv("SANDBOX_CHILD") == "1" {
		st, err := Confine()
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		if _, err := os.OpenFile("/etc/shadow", os.O_RDONLY, 0); err == nil && st.Uid != 0 {
			os.Stderr.WriteString("confined process could read /etc/shadow")
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("dropping privileges is tested as root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestConfine$")
	cmd.Env = append(os.Environ(), "SANDBOX_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("confined child: %v\n%s", err, out)
	}
}

func TestReadStatus(t *testing.T) {
	st, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	if st.Uid != os.Geteuid() || st.Gid != os.Getegid() {
		t.Errorf("status says uid %d gid %d, the process has %d %d", st.Uid, st.Gid, os.Geteuid(), os.Getegid())
	}
}
