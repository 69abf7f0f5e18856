package sandbox

import (
	"os"
	"os/exec"
	"syscall"
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

// TestConfinedCannot confines a child process and makes it try what a
// subverted daemon would: open a file, create a socket, execute a program.
// Opening fails with EACCES; the others kill the process (SIGSYS).
func TestConfinedCannot(t *testing.T) {
	if attempt := os.Getenv("SANDBOX_ATTEMPT"); attempt != "" {
		if _, err := Confine(); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		switch attempt {
		case "open":
			if _, err := os.Open("/etc/hostname"); err != nil {
				os.Exit(10) // refused, as it must be
			}
		case "socket":
			syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		case "exec":
			syscall.Exec("/bin/true", []string{"true"}, nil)
		}
		os.Exit(0) // the attempt worked: the sandbox failed
	}
	if os.Geteuid() != 0 {
		t.Skip("confinement is tested as root")
	}
	for _, c := range []struct {
		attempt string
		killed  bool
	}{{"open", false}, {"socket", true}, {"exec", true}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestConfinedCannot$")
		cmd.Env = append(os.Environ(), "SANDBOX_ATTEMPT="+c.attempt, "SANDBOX_CHILD=1")
		out, err := cmd.CombinedOutput()
		ee, _ := err.(*exec.ExitError)
		switch {
		case ee == nil:
			t.Errorf("%s: the confined process succeeded\n%s", c.attempt, out)
		case c.killed:
			if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Errorf("%s: want death by SIGSYS, got %v\n%s", c.attempt, err, out)
			}
		case ee.ExitCode() != 10:
			t.Errorf("%s: want a refused call (exit 10), got %v\n%s", c.attempt, err, out)
		}
	}
}
