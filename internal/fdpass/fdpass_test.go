package fdpass

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pair returns two connected ends of a SOCK_SEQPACKET socketpair, plus the
// raw descriptor of the second so tests can send malformed packets.
func pair(t *testing.T) (*Conn, *Conn, int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := syscall.Dup(fds[0]) // a second handle on a's end: writes reach b
	if err != nil {
		t.Fatal(err)
	}
	a, err := FileConn(os.NewFile(uintptr(fds[0]), "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := FileConn(os.NewFile(uintptr(fds[1]), "b"))
	if err != nil {
		t.Fatal(err)
	}
	a.Timeout, b.Timeout = 2*time.Second, 2*time.Second
	t.Cleanup(func() { a.Close(); b.Close(); syscall.Close(raw) })
	return a, b, raw
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func header(t Type) []byte {
	b := make([]byte, headerSize)
	copy(b, magic[:])
	binary.LittleEndian.PutUint16(b[4:], Version)
	binary.LittleEndian.PutUint16(b[6:], uint16(t))
	return b
}

// TestRoundTrip sends every message type both ways and checks it arrives
// intact, with its descriptor where it carries one.
func TestRoundTrip(t *testing.T) {
	a, b, _ := pair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	msgs := []Message{
		&Hello{Version: Version, FSType: "ext4", Source: "/dev/sdb1", Target: "/mnt", Options: []string{"ro", "noatime"}},
		&FileRequest{ID: 7, Role: RoleSource},
		&FileReply{ID: 7, Block: true},
		&FileReply{ID: 8, Error: "/dev/sdb1: not a block device or regular file"},
		&Error{Message: "/dev/sdb1: not an ext2/ext3/ext4 filesystem"},
		&MountParams{Subtype: "ext4", ReadOnly: true, MaxRead: 1 << 20, BlockSize: 4096, Warnings: []string{"mounted read-only"}},
		&FuseDevice{},
		&Ready{},
		&Goodbye{Reason: "unmounted"},
	}
	for _, m := range msgs {
		var files []*os.File
		if m.fds() == 1 {
			files = []*os.File{w}
		}
		if err := a.Send(m, files...); err != nil {
			t.Fatalf("send %s: %v", m.Type(), err)
		}
		got, gotFiles, err := b.Recv()
		if err != nil {
			t.Fatalf("recv %s: %v", m.Type(), err)
		}
		if got.Type() != m.Type() || len(gotFiles) != m.fds() {
			t.Fatalf("sent %s with %d fds, got %s with %d", m.Type(), m.fds(), got.Type(), len(gotFiles))
		}
		for _, f := range gotFiles {
			flags, err := fcntl(int(f.Fd()), syscall.F_GETFD)
			if err != nil || flags&syscall.FD_CLOEXEC == 0 {
				t.Errorf("%s: received descriptor is not close-on-exec (flags %d, %v)", m.Type(), flags, err)
			}
			// The descriptor is the pipe's write end: prove it.
			if _, err := f.Write([]byte("x")); err != nil {
				t.Errorf("%s: writing to the received pipe: %v", m.Type(), err)
			}
			buf := make([]byte, 1)
			if _, err := r.Read(buf); err != nil || buf[0] != 'x' {
				t.Errorf("%s: pipe read %q, %v", m.Type(), buf, err)
			}
			f.Close()
		}
	}
	// And the other way.
	if err := b.Send(&Error{Message: "refused"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Expect(TMountParams); err == nil || err.Error() != "refused" {
		t.Fatalf("Expect on a peer Error: %v", err)
	}
}

func fcntl(fd, cmd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// TestMalformed sends broken packets from a raw socket and checks each is
// refused with a ProtocolError, leaking no descriptor.
func TestMalformed(t *testing.T) {
	long := strings.Repeat("x", MaxStringLen+1)
	cases := []struct {
		name string
		data []byte
		fds  int
		want string
	}{
		{"empty header", []byte{1, 2, 3}, 0, "shorter than its header"},
		{"bad magic", append([]byte("nope\x01\x00\x01\x00"), "{}"...), 0, "bad magic"},
		{"bad version", func() []byte { b := header(THello); b[4] = 9; return append(b, "{}"...) }(), 0, "version"},
		{"unknown type", append(header(99), "{}"...), 0, "unknown"},
		{"bad json", append(header(THello), "{"...), 0, "malformed"},
		{"unknown field", append(header(TReady), `{"x":1}`...), 0, "malformed"},
		{"trailing data", append(header(TReady), `{} {}`...), 0, "trailing"},
		{"wrong hello version", append(header(THello), `{"version":2,"fstype":"ext4","source":"a","target":"b"}`...), 0, "version"},
		{"unknown fstype", append(header(THello), `{"version":1,"fstype":"xfs","source":"a","target":"b"}`...), 0, "filesystem type"},
		{"missing source", append(header(THello), `{"version":1,"fstype":"ext4","target":"b"}`...), 0, "source"},
		{"long string", append(header(TError), `{"message":"`+long+`"}`...), 0, "long"},
		{"nul in path", append(header(THello), `{"version":1,"fstype":"ext4","source":"a\u0000b","target":"b"}`...), 0, "NUL"},
		{"bad role", append(header(TFileRequest), `{"id":1,"role":"/etc/shadow"}`...), 0, "role"},
		{"bad subtype", append(header(TMountParams), `{"subtype":"ext4,allow_other"}`...), 0, "subtype"},
		{"bad block size", append(header(TMountParams), `{"subtype":"ext4","block_size":1000}`...), 0, "block size"},
		{"empty error", append(header(TError), `{"message":""}`...), 0, "empty"},
		{"unexpected fd", append(header(TReady), "{}"...), 1, "must carry 0"},
		{"missing fd", append(header(TFuseDevice), "{}"...), 0, "must carry 1"},
		{"fd on failed reply", append(header(TFileReply), `{"id":1,"error":"no"}`...), 1, "must carry 0"},
		{"two fds", append(header(TFuseDevice), "{}"...), 2, "must carry 1"},
		{"too many fds", append(header(TFuseDevice), "{}"...), 8, "truncated"},
		{"oversized", append(header(TError), make([]byte, MaxMessageSize)...), 0, "larger"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, b, raw := pair(t)
			before := openFDs(t)
			var oob []byte
			if c.fds > 0 {
				fds := make([]int, c.fds)
				for i := range fds {
					fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer syscall.Close(fd)
					fds[i] = fd
				}
				oob = syscall.UnixRights(fds...)
			}
			if err := syscall.Sendmsg(raw, c.data, oob, nil, 0); err != nil {
				t.Fatalf("sendmsg: %v", err)
			}
			withSent := openFDs(t)
			_, files, err := b.Recv()
			var pe *ProtocolError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v (files %d), want a ProtocolError containing %q", err, len(files), c.want)
			}
			if after := openFDs(t); after != withSent {
				t.Errorf("descriptors open: %d before, %d after sending, %d after Recv: received ones leaked", before, withSent, after)
			}
		})
	}
}

// TestSendRefusesInvalid checks the sending side's own checks.
func TestSendRefusesInvalid(t *testing.T) {
	a, _, _ := pair(t)
	if err := a.Send(&FuseDevice{}); err == nil {
		t.Error("sent a FuseDevice without its descriptor")
	}
	if err := a.Send(&Hello{Version: Version, FSType: "ext4", Source: "a", Target: "b", Options: make([]string, MaxOptions+1)}); err == nil {
		t.Error("sent a Hello with too many options")
	}
	if err := a.Send(&Error{Message: strings.Repeat("x", MaxMessageSize)}); err == nil {
		t.Error("sent an oversized message")
	}
}

// TestTimeoutAndEOF checks that a silent peer times out and a closed one
// gives io.EOF.
func TestTimeoutAndEOF(t *testing.T) {
	a, b, raw := pair(t)
	b.Timeout = 100 * time.Millisecond
	start := time.Now()
	_, _, err := b.Recv()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent peer: got %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout took %v", d)
	}
	b.Timeout = 2 * time.Second
	a.Close()
	syscall.Close(raw)
	// b's own raw dup is closed; the peer end a is closed: EOF.
	if _, _, err := b.Recv(); err != io.EOF {
		t.Fatalf("closed peer: got %v, want io.EOF", err)
	}
}

// TestExpectWrongType checks that an out-of-order message is refused and
// its descriptors closed.
func TestExpectWrongType(t *testing.T) {
	a, b, _ := pair(t)
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.Send(&FuseDevice{}, f); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	if _, _, err := b.Expect(THello); err == nil || !strings.Contains(err.Error(), "expected a hello") {
		t.Fatalf("got %v", err)
	}
	if after := openFDs(t); after >= before+1 {
		t.Errorf("descriptor of the unexpected message leaked (%d -> %d)", before, after)
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder.
func FuzzDecode(f *testing.F) {
	f.Add(append(header(THello), `{"version":1,"fstype":"ext4","source":"/dev/sdb1","target":"/mnt","options":["ro"]}`...))
	f.Add(append(header(TMountParams), `{"subtype":"ext4","readonly":true,"max_read":1048576}`...))
	f.Add(append(header(TFileReply), `{"id":1,"block":true}`...))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err == nil {
			if m.validate() != nil {
				t.Fatalf("decode accepted an invalid %s", m.Type())
			}
		}
	})
}
