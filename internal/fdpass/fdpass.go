// Package fdpass is the wire protocol between mount.safe, the privileged
// helper, and safefsd, the sandboxed daemon: versioned messages over an
// AF_UNIX SOCK_SEQPACKET connection, with file descriptors carried by
// SCM_RIGHTS.
//
// A mount goes: the helper sends Hello; the daemon asks for the files it
// needs with FileRequest and the helper answers each with a FileReply
// carrying the descriptor (or a reason); the daemon answers with Error (a
// message for a person) or MountParams; the helper sends FuseDevice with
// /dev/fuse; the daemon sends Ready once it has answered the kernel's INIT;
// either side may end with Goodbye.
//
// Neither side trusts the other: the helper is privileged and the daemon
// parses hostile filesystems, so a compromised daemon must not be able to
// confuse the helper. Every message is bounded in size, checked for its
// version, type, fields and the exact number of descriptors it carries;
// descriptors that arrive where none belong are closed; truncated data or
// control messages are errors; every receive has a deadline.
package fdpass

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Version is the protocol version this package speaks. Peers must agree
// exactly: the helper and the daemon ship together.
const Version = 1

// Limits on what one message may carry.
const (
	// MaxMessageSize bounds a message, header included.
	MaxMessageSize = 64 << 10
	// MaxFDs bounds the descriptors in one message; no message type
	// carries more than one, so anything beyond is hostile.
	MaxFDs = 4
	// MaxStringLen bounds each string field (paths, options, messages).
	MaxStringLen = 4096
	// MaxOptions bounds the number of mount options in a Hello.
	MaxOptions = 64
)

// DefaultTimeout is how long Recv waits for the peer by default. Opening
// a device or answering INIT takes milliseconds; a peer silent for this
// long is stuck or gone.
const DefaultTimeout = 30 * time.Second

// magic starts every message, so that a stray peer is told apart from a
// version mismatch.
var magic = [4]byte{'s', 'f', 'd', 'p'}

const headerSize = 8 // magic, u16 version, u16 type

// Type identifies a message.
type Type uint16

// Message types.
const (
	THello Type = iota + 1
	TFileRequest
	TFileReply
	TError
	TMountParams
	TFuseDevice
	TReady
	TGoodbye
)

var typeNames = map[Type]string{
	THello: "hello", TFileRequest: "file request", TFileReply: "file reply", TError: "error",
	TMountParams: "mount parameters", TFuseDevice: "fuse device", TReady: "ready", TGoodbye: "goodbye",
}

// String names the type.
func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("message type %d", uint16(t))
}

// Message is implemented by every message struct.
type Message interface {
	// Type is the message's wire type.
	Type() Type
	// validate checks fields after decoding (and before sending).
	validate() error
	// fds is how many descriptors the message carries.
	fds() int
}

// Hello opens a mount: the helper tells the daemon what to mount.
type Hello struct {
	Version int      `json:"version"`
	FSType  string   `json:"fstype"` // "ext4", "ext3" or "ext2"
	Source  string   `json:"source"`
	Target  string   `json:"target"`
	Options []string `json:"options"`
}

// Role names a file the daemon may ask for. The daemon names a role, not a
// path: it never chooses what the helper opens.
type Role string

// Roles.
const (
	// RoleSource is the device or image given as the mount's source.
	RoleSource Role = "source"
)

// FileRequest asks the helper to open a file.
type FileRequest struct {
	ID    uint32 `json:"id"`
	Role  Role   `json:"role"`
	Write bool   `json:"write"` // open read-write rather than read-only
	// Direct asks for the file already sent for this role, opened again
	// with O_DIRECT (a second open file description, so that the first
	// keeps using the page cache): the daemon reads bulk file data
	// through it. Only for a block device; the helper may refuse.
	Direct bool `json:"direct,omitempty"`
}

// FileReply answers a FileRequest: with one descriptor, or with Error set
// and none.
type FileReply struct {
	ID    uint32 `json:"id"`
	Error string `json:"error,omitempty"`
	// Block reports that the file is a block device (else a regular
	// file), as the helper found it.
	Block bool `json:"block"`
}

// Error carries a failure for a person to read; it ends the exchange.
type Error struct {
	Message string `json:"message"`
}

// MountParams is the daemon's acceptance: how the helper should create the
// FUSE mount.
type MountParams struct {
	Subtype  string `json:"subtype"`  // shown as fuse.SUBTYPE / fuseblk.SUBTYPE
	ReadOnly bool   `json:"readonly"` // mount read-only
	MaxRead  uint32 `json:"max_read"`
	// BlockSize is the filesystem's block size, for a fuseblk mount's
	// blksize (0: leave the kernel's default).
	BlockSize uint32   `json:"block_size"`
	Warnings  []string `json:"warnings,omitempty"` // for the helper to print
}

// FuseDevice hands the daemon the /dev/fuse descriptor (carried).
type FuseDevice struct{}

// Ready tells the helper that the daemon has answered INIT, so the mount
// may be attached.
type Ready struct{}

// Goodbye ends the exchange without an error.
type Goodbye struct {
	Reason string `json:"reason,omitempty"`
}

// Type implementations.
func (*Hello) Type() Type       { return THello }
func (*FileRequest) Type() Type { return TFileRequest }
func (*FileReply) Type() Type   { return TFileReply }
func (*Error) Type() Type       { return TError }
func (*MountParams) Type() Type { return TMountParams }
func (*FuseDevice) Type() Type  { return TFuseDevice }
func (*Ready) Type() Type       { return TReady }
func (*Goodbye) Type() Type     { return TGoodbye }

func (*Hello) fds() int       { return 0 }
func (*FileRequest) fds() int { return 0 }
func (m *FileReply) fds() int {
	if m.Error != "" {
		return 0
	}
	return 1
}
func (*Error) fds() int       { return 0 }
func (*MountParams) fds() int { return 0 }
func (*FuseDevice) fds() int  { return 1 }
func (*Ready) fds() int       { return 0 }
func (*Goodbye) fds() int     { return 0 }

func checkString(field, s string) error {
	if len(s) > MaxStringLen {
		return fmt.Errorf("%s is %d bytes long, more than %d", field, len(s), MaxStringLen)
	}
	if bytes.IndexByte([]byte(s), 0) >= 0 {
		return fmt.Errorf("%s contains a NUL byte", field)
	}
	return nil
}

func (m *Hello) validate() error {
	if m.Version != Version {
		return fmt.Errorf("protocol version %d, this side speaks %d: mount.safe and safefsd must come from the same release", m.Version, Version)
	}
	switch m.FSType {
	case "ext2", "ext3", "ext4":
	default:
		return fmt.Errorf("unknown filesystem type %q", m.FSType)
	}
	if m.Source == "" || m.Target == "" {
		return errors.New("source and target must be given")
	}
	if len(m.Options) > MaxOptions {
		return fmt.Errorf("%d mount options, more than %d", len(m.Options), MaxOptions)
	}
	for _, f := range append([]string{m.Source, m.Target}, m.Options...) {
		if err := checkString("a field", f); err != nil {
			return err
		}
	}
	return nil
}

func (m *FileRequest) validate() error {
	if m.Role != RoleSource {
		return fmt.Errorf("request for unknown file role %q", m.Role)
	}
	return nil
}

func (m *FileReply) validate() error { return checkString("file reply error", m.Error) }
func (m *Error) validate() error {
	if m.Message == "" {
		return errors.New("error message is empty")
	}
	return checkString("error message", m.Message)
}
func (m *MountParams) validate() error {
	if err := checkString("subtype", m.Subtype); err != nil {
		return err
	}
	for _, c := range m.Subtype {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fmt.Errorf("subtype %q has characters other than a-z and 0-9", m.Subtype)
		}
	}
	if b := m.BlockSize; b != 0 && (b < 512 || b > 65536 || b&(b-1) != 0) {
		return fmt.Errorf("block size %d is not a power of two between 512 and 65536", b)
	}
	if len(m.Warnings) > MaxOptions {
		return fmt.Errorf("%d warnings, more than %d", len(m.Warnings), MaxOptions)
	}
	for _, w := range m.Warnings {
		if err := checkString("warning", w); err != nil {
			return err
		}
	}
	return nil
}
func (*FuseDevice) validate() error { return nil }
func (*Ready) validate() error      { return nil }
func (m *Goodbye) validate() error  { return checkString("goodbye reason", m.Reason) }

// newMessage returns an empty message of type t.
func newMessage(t Type) Message {
	switch t {
	case THello:
		return &Hello{}
	case TFileRequest:
		return &FileRequest{}
	case TFileReply:
		return &FileReply{}
	case TError:
		return &Error{}
	case TMountParams:
		return &MountParams{}
	case TFuseDevice:
		return &FuseDevice{}
	case TReady:
		return &Ready{}
	case TGoodbye:
		return &Goodbye{}
	}
	return nil
}

// ProtocolError reports a message that broke the protocol: malformed,
// oversized, unexpected, or with the wrong descriptors.
type ProtocolError struct {
	Detail string
}

// Error describes the violation.
func (e *ProtocolError) Error() string { return "fdpass: " + e.Detail }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Detail: fmt.Sprintf(format, args...)}
}

// Conn is one end of a connection. It is not safe for concurrent use by
// several senders or several receivers.
type Conn struct {
	c *net.UnixConn
	// Timeout bounds each Recv (and Send); zero means DefaultTimeout.
	Timeout time.Duration
}

// NewConn wraps a connected SOCK_SEQPACKET Unix socket.
func NewConn(c *net.UnixConn) *Conn { return &Conn{c: c} }

// FileConn makes a Conn of an inherited socket descriptor (the socket
// activation fd, or one end of a socketpair), taking ownership of f.
func FileConn(f *os.File) (*Conn, error) {
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, protoErr("descriptor is not a Unix socket")
	}
	return NewConn(uc), nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// UnixConn returns the underlying socket (for SO_PEERCRED checks).
func (c *Conn) UnixConn() *net.UnixConn { return c.c }

func (c *Conn) deadline() time.Time {
	t := c.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return time.Now().Add(t)
}

// Send sends m with the descriptors it carries (exactly m's count).
func (c *Conn) Send(m Message, files ...*os.File) error {
	if err := m.validate(); err != nil {
		return protoErr("refusing to send an invalid %s: %v", m.Type(), err)
	}
	if len(files) != m.fds() {
		return protoErr("a %s carries %d descriptors, not %d", m.Type(), m.fds(), len(files))
	}
	buf, err := Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = syscall.UnixRights(fds...)
	}
	c.c.SetWriteDeadline(c.deadline())
	n, oobn, err := c.c.WriteMsgUnix(buf, oob, nil)
	if err != nil {
		return fmt.Errorf("fdpass: sending %s: %w", m.Type(), err)
	}
	if n != len(buf) || oobn != len(oob) {
		return protoErr("short send of %s", m.Type())
	}
	return nil
}

// Marshal returns m as it goes on the wire (without its descriptors),
// checked as Send checks it. Tests use it to make messages they send
// themselves.
func Marshal(m Message) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, protoErr("refusing to send an invalid %s: %v", m.Type(), err)
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, headerSize, headerSize+len(payload))
	copy(buf, magic[:])
	binary.LittleEndian.PutUint16(buf[4:], Version)
	binary.LittleEndian.PutUint16(buf[6:], uint16(m.Type()))
	buf = append(buf, payload...)
	if len(buf) > MaxMessageSize {
		return nil, protoErr("a %s of %d bytes exceeds the %d-byte limit", m.Type(), len(buf), MaxMessageSize)
	}
	return buf, nil
}

// Recv receives one message and the descriptors it carries, as files
// (close-on-exec). Descriptors are returned only when the message type
// carries them in that number; otherwise they are closed and the message
// is a ProtocolError. A closed connection gives io.EOF.
func (c *Conn) Recv() (Message, []*os.File, error) {
	buf := make([]byte, MaxMessageSize+1)
	oob := make([]byte, syscall.CmsgSpace(MaxFDs*4))
	c.c.SetReadDeadline(c.deadline())
	n, oobn, flags, _, err := c.c.ReadMsgUnix(buf, oob)
	files, ferr := parseRights(oob[:oobn])
	fail := func(e error) (Message, []*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, e
	}
	if errors.Is(err, io.EOF) {
		return fail(io.EOF)
	}
	if err != nil {
		return fail(fmt.Errorf("fdpass: receiving: %w", err))
	}
	if ferr != nil {
		return fail(ferr)
	}
	if n == 0 && oobn == 0 {
		return fail(io.EOF)
	}
	if flags&syscall.MSG_CTRUNC != 0 {
		return fail(protoErr("control data truncated: more than %d descriptors sent", MaxFDs))
	}
	if flags&syscall.MSG_TRUNC != 0 || n > MaxMessageSize {
		return fail(protoErr("message larger than %d bytes", MaxMessageSize))
	}
	m, err := decode(buf[:n])
	if err != nil {
		return fail(err)
	}
	if len(files) != m.fds() {
		return fail(protoErr("a %s must carry %d descriptors, got %d", m.Type(), m.fds(), len(files)))
	}
	return m, files, nil
}

// parseRights extracts SCM_RIGHTS descriptors as close-on-exec files.
// Any other control message is an error (after closing what was found).
func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, protoErr("malformed control data: %v", err)
	}
	var files []*os.File
	var bad error
	for i := range msgs {
		fds, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			bad = protoErr("unexpected control message (level %d, type %d)", msgs[i].Header.Level, msgs[i].Header.Type)
			continue
		}
		for _, fd := range fds {
			// The net package asks for MSG_CMSG_CLOEXEC already; set it
			// again so no exec can ever inherit a device.
			syscall.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "fdpass"))
		}
	}
	return files, bad
}

// decode parses a message body, checking header, type and fields.
func decode(b []byte) (Message, error) {
	if len(b) < headerSize {
		return nil, protoErr("message of %d bytes is shorter than its header", len(b))
	}
	if !bytes.Equal(b[:4], magic[:]) {
		return nil, protoErr("not a safefs message (bad magic %q)", b[:4])
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != Version {
		return nil, protoErr("peer speaks protocol version %d, this side %d: mount.safe and safefsd must come from the same release", v, Version)
	}
	t := Type(binary.LittleEndian.Uint16(b[6:]))
	m := newMessage(t)
	if m == nil {
		return nil, protoErr("unknown %s", t)
	}
	dec := json.NewDecoder(bytes.NewReader(b[headerSize:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m); err != nil {
		return nil, protoErr("malformed %s: %v", t, err)
	}
	if dec.More() {
		return nil, protoErr("trailing data after %s", t)
	}
	if err := m.validate(); err != nil {
		return nil, protoErr("invalid %s: %v", t, err)
	}
	return m, nil
}

// Expect receives one message and checks that it is of type want; an
// Error from the peer comes back as a *PeerError.
func (c *Conn) Expect(want Type) (Message, []*os.File, error) {
	m, files, err := c.Recv()
	if err != nil {
		return nil, nil, err
	}
	if e, ok := m.(*Error); ok && want != TError {
		return nil, nil, &PeerError{Message: e.Message}
	}
	if m.Type() != want {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, protoErr("expected a %s, got a %s", want, m.Type())
	}
	return m, files, nil
}

// PeerError is a failure the peer reported with an Error message, meant
// for a person as it stands.
type PeerError struct {
	Message string
}

// Error returns the peer's message.
func (e *PeerError) Error() string { return e.Message }
