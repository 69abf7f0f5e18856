package fusefs_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"safefs/internal/fusefs"
	"safefs/internal/iomap/abi"
	"safefs/internal/testimg"
)

// The simulated kernel. FUSE iomap is in no released kernel, so these tests
// play the kernel's side of /dev/fuse over a SOCK_SEQPACKET socketpair
// handed to the server in place of /dev/fuse (a seqpacket socket keeps
// message boundaries, as /dev/fuse does). It sends what the fuse-iomap
// kernel sends, and holds every reply to the checks that kernel makes
// (internal/iomap/abi); the mappings themselves are compared with what
// FIEMAP says on the kernel's own ext4 mount of the same image.

// FUSE opcodes the simulated kernel sends.
const (
	opLookup  = 1
	opGetattr = 3
	opOpen    = 14
	opRead    = 15
	opInit    = 26
	opLseek   = 46
)

type simKernel struct {
	t      *testing.T
	fd     int
	unique uint64
	buf    []byte
	// upserts are the IOMAP_UPSERT_MAPPINGS notifications received.
	upserts []abi.UpsertMappings
	served  chan error
}

// startSim starts a server for img (opened with internal/ext4) on one end
// of a socketpair and answers its INIT as the kernel would: offering
// FUSE_IOMAP when iomap is set, then, if the server accepted it, sending
// FUSE_IOMAP_CONFIG before anything else. It returns the INIT reply.
func startSim(t *testing.T, img string, iomap bool) (*simKernel, *fuse.InitOut) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	}
	k := &simKernel{t: t, fd: fds[1], buf: make([]byte, 2<<20), served: make(chan error, 1)}
	t.Cleanup(func() {
		unix.Close(k.fd) // the server sees the connection end
		select {
		case err := <-k.served:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server still running 10 s after the connection ended")
		}
	})
	fsys := openExt4(t, img)
	// The kernel queues INIT before the server starts reading.
	in := fuse.InitIn{Major: 7, Minor: abi.KernelMinorVersion, MaxReadAhead: 1 << 20,
		Flags: fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES | fuse.CAP_MAX_PAGES | fuse.CAP_INIT_EXT}
	if iomap {
		in.Flags2 = abi.InitFlags2Iomap
	}
	k.send(opInit, 0, body(&in))
	go func() {
		srv, err := fusefs.NewServer(fds[0], fsys, fusefs.Options{Logf: t.Logf, IomapDevice: abi.DevFuseblk, Source: simSource})
		if err != nil {
			k.served <- err
			return
		}
		k.served <- srv.Serve()
	}()
	errno, payload := k.recv()
	if errno != 0 || len(payload) < int(unsafe.Sizeof(fuse.InitOut{}))-22 {
		t.Fatalf("INIT: errno %d, %d bytes", errno, len(payload))
	}
	var out fuse.InitOut
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out)), unsafe.Sizeof(out)), payload)
	if out.Flags2&abi.InitFlags2Iomap != 0 {
		if !iomap {
			t.Fatalf("the server accepted FUSE_IOMAP, which was not offered")
		}
		// The kernel asks for the configuration while it processes
		// the INIT reply.
		cin := abi.ConfigIn{MaxBytes: 1<<63 - 1}
		errno, payload := k.call(abi.OpIomapConfig, 0, abi.Marshal(&cin))
		if errno != 0 && errno != -int32(syscall.ENOSYS) {
			t.Fatalf("FUSE_IOMAP_CONFIG: errno %d (the mount would fail)", errno)
		}
		var cout abi.ConfigOut
		if err := abi.Unmarshal(payload, &cout); err != nil {
			t.Fatalf("FUSE_IOMAP_CONFIG reply: %v", err)
		}
		if err := abi.CheckConfigReply(cout); err != nil {
			t.Fatalf("FUSE_IOMAP_CONFIG reply refused: %v", err)
		}
		checkConfig(t, img, cout)
	}
	return k, &out
}

// simSource is the source name the simulated mount gives the server.
const simSource = "loop7"

// body returns the bytes of a go-fuse request struct after its header.
func body[T any](v *T) []byte {
	b := unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
	return append([]byte(nil), b[unsafe.Sizeof(fuse.InHeader{}):]...)
}

func (k *simKernel) send(op uint32, node uint64, payload []byte) {
	k.unique++
	h := fuse.InHeader{Length: uint32(int(unsafe.Sizeof(fuse.InHeader{})) + len(payload)), Opcode: op, Unique: k.unique, NodeId: node}
	msg := append(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unsafe.Sizeof(h)), payload...)
	if _, err := unix.Write(k.fd, msg); err != nil {
		k.t.Fatalf("sending opcode %d: %v", op, err)
	}
}

// recv returns the reply to the last request sent: its error (negative
// errno) and payload. Notifications that come first are recorded.
func (k *simKernel) recv() (int32, []byte) {
	for {
		pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 10000)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			k.t.Fatalf("no reply from the server in 10 s (%v)", err)
		}
		n, err = unix.Read(k.fd, k.buf)
		if err != nil || n < 16 {
			k.t.Fatalf("reading a reply: %d bytes, %v", n, err)
		}
		var oh fuse.OutHeader
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&oh)), unsafe.Sizeof(oh)), k.buf)
		if int(oh.Length) != n {
			k.t.Fatalf("reply header says %d bytes, message has %d", oh.Length, n)
		}
		payload := append([]byte(nil), k.buf[16:n]...)
		if oh.Unique == 0 {
			if oh.Status != abi.NotifyIomapUpsertMappings {
				k.t.Fatalf("unexpected notification %d", oh.Status)
			}
			var u abi.UpsertMappings
			if err := abi.Unmarshal(payload, &u); err != nil {
				k.t.Fatalf("IOMAP_UPSERT_MAPPINGS: %v", err)
			}
			k.upserts = append(k.upserts, u)
			continue
		}
		if oh.Unique != k.unique {
			k.t.Fatalf("reply to request %d, want %d", oh.Unique, k.unique)
		}
		if oh.Status != 0 && len(payload) != 0 {
			k.t.Fatalf("error reply %d carries %d bytes", oh.Status, len(payload))
		}
		return oh.Status, payload
	}
}

func (k *simKernel) call(op uint32, node uint64, payload []byte) (int32, []byte) {
	k.send(op, node, payload)
	return k.recv()
}

// lookup resolves a path from the root, as the kernel's path walk does.
func (k *simKernel) lookup(path string) fuse.EntryOut {
	node := uint64(fuse.FUSE_ROOT_ID)
	var out fuse.EntryOut
	for _, name := range strings.Split(path, "/") {
		errno, payload := k.call(opLookup, node, append([]byte(name), 0))
		if errno != 0 || len(payload) < int(unsafe.Sizeof(out)) {
			k.t.Fatalf("LOOKUP %q in %s: errno %d", name, path, errno)
		}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out)), unsafe.Sizeof(out)), payload)
		node = out.NodeId
	}
	return out
}

func (k *simKernel) getattr(node uint64) fuse.Attr {
	in := fuse.GetAttrIn{}
	errno, payload := k.call(opGetattr, node, body(&in))
	var out fuse.AttrOut
	if errno != 0 || len(payload) < int(unsafe.Sizeof(out)) {
		k.t.Fatalf("GETATTR %d: errno %d", node, errno)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out)), unsafe.Sizeof(out)), payload)
	return out.Attr
}

// begin sends FUSE_IOMAP_BEGIN and returns the errno and decoded reply.
func (k *simKernel) begin(node uint64, in abi.BeginIn) (int32, abi.BeginOut) {
	errno, payload := k.call(abi.OpIomapBegin, node, abi.Marshal(&in))
	var out abi.BeginOut
	if errno == 0 {
		if err := abi.Unmarshal(payload, &out); err != nil {
			k.t.Fatalf("FUSE_IOMAP_BEGIN reply: %v", err)
		}
	}
	return errno, out
}

// checkConfig compares the FUSE_IOMAP_CONFIG reply with the superblock as
// dumpe2fs reads it.
func checkConfig(t *testing.T, img string, c abi.ConfigOut) {
	t.Helper()
	path, err := testimg.FindTool("dumpe2fs")
	if err != nil {
		t.Skip(err)
	}
	out, err := execOutput(path, "-h", img)
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	}
	field := func(name string) string {
		for _, l := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && k == name {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("dumpe2fs -h has no %q", name)
		return ""
	}
	if c.Flags&abi.ConfigBlockSize == 0 || strconv.Itoa(int(c.BlockSize)) != field("Block size") {
		t.Errorf("config block size %d (flags %#x), dumpe2fs says %s", c.BlockSize, c.Flags, field("Block size"))
	}
	uuid := hex.EncodeToString(c.UUID[:c.UUIDLen])
	if want := strings.ReplaceAll(field("Filesystem UUID"), "-", ""); c.Flags&abi.ConfigUUID == 0 || uuid != want {
		t.Errorf("config UUID %s, dumpe2fs says %s", uuid, want)
	}
	if c.Flags&abi.ConfigMaxLinks == 0 || c.MaxLinks != 65000 {
		t.Errorf("config max links %d, want ext4's 65000", c.MaxLinks)
	}
	if is, _ := strconv.Atoi(field("Inode size")); (is > 128) != (c.TimeGran == 1) {
		t.Errorf("inode size %d but time granularity %d ns", is, c.TimeGran)
	}
	if sid, _, _ := strings.Cut(string(c.SID[:]), "\x00"); c.Flags&abi.ConfigSID == 0 || sid != simSource {
		t.Errorf("config s_id %q, want %q", sid, simSource)
	}
	// s_maxbytes by ext4_max_size: 2^32-1 blocks, and without huge_file
	// the 32-bit count of 512-byte sectors.
	bits, _ := strconv.Atoi(field("Block size"))
	shift := 0
	for 1<<shift < bits {
		shift++
	}
	want := uint64(1<<32-1) << shift
	if !strings.Contains(" "+field("Filesystem features")+" ", " huge_file ") {
		want = min(want, uint64(1<<32-1)>>(shift-9)<<shift)
	}
	if c.Flags&abi.ConfigMaxBytes == 0 || uint64(c.MaxBytes) != want {
		t.Errorf("config s_maxbytes %d, want %d", c.MaxBytes, want)
	}
}

// fileFacts is what the kernel's own mount and debugfs say about a file.
type fileFacts struct {
	path   string
	ino    uint64
	size   uint64
	inline bool
	extent []testimg.FiemapExtent
}

// kernelFacts reads every regular file's inode number, size and FIEMAP
// extents from the kernel's ext4 mount of img, and whether it has inline
// data from debugfs.
func kernelFacts(t *testing.T, img string, want map[string]testimg.Entry) []fileFacts {
	t.Helper()
	var files []fileFacts
	for p, e := range want {
		if e.Mode&syscall.S_IFMT == syscall.S_IFREG {
			files = append(files, fileFacts{path: p, ino: e.Ino, size: uint64(e.Size)})
		}
	}
	testimg.WithKernelMount(t, img, func(mnt string) {
		for i := range files {
			f, err := os.Open(filepath.Join(mnt, files[i].path))
			if err != nil {
				t.Fatal(err)
			}
			files[i].extent, err = testimg.Fiemap(f)
			f.Close()
			if err != nil {
				t.Fatalf("FIEMAP %s: %v", files[i].path, err)
			}
		}
	})
	paths := make([]string, len(files))
	for i := range files {
		paths[i] = "/" + files[i].path
	}
	for i, st := range testimg.DebugfsStats(t, img, paths) {
		flags, err := strconv.ParseUint(strings.TrimPrefix(st["Flags"], "0x"), 16, 32)
		if err != nil {
			t.Fatalf("debugfs stat %s: flags %q", paths[i], st["Flags"])
		}
		files[i].inline = flags&0x10000000 != 0 // EXT4_INLINE_DATA_FL
	}
	return files
}

// oracleBlock says what FIEMAP reports for the block at byte off: its type
// and device byte address.
func oracleBlock(f fileFacts, off uint64) (uint16, uint64) {
	for _, e := range f.extent {
		if off >= e.Logical && off < e.Logical+e.Length {
			switch {
			case e.Flags&testimg.FiemapExtentDataInline != 0:
				return abi.TypeInline, abi.NullAddr
			case e.Flags&testimg.FiemapExtentUnwritten != 0:
				return abi.TypeUnwritten, e.Physical + off - e.Logical
			default:
				return abi.TypeMapped, e.Physical + off - e.Logical
			}
		}
	}
	return abi.TypeHole, abi.NullAddr
}

// checkAgainstFiemap checks every block of a read mapping (up to the end
// of the file) against FIEMAP.
func checkAgainstFiemap(t *testing.T, f fileFacts, bs uint64, m abi.IomapIO) {
	t.Helper()
	end := min(m.Offset+m.Length, (f.size+bs-1)/bs*bs)
	const maxBlocks = 1 << 14
	for off, n := m.Offset, 0; off < end && n < maxBlocks; off, n = off+bs, n+1 {
		typ, addr := oracleBlock(f, off)
		got := abi.NullAddr
		if m.Type == abi.TypeMapped || m.Type == abi.TypeUnwritten {
			got = m.Addr + off - m.Offset
		}
		if typ != m.Type || addr != got {
			t.Errorf("%s: block at %d: server maps %s at %d (mapping %+v), FIEMAP says %s at %d",
				f.path, off, abi.TypeName(m.Type), got, m, abi.TypeName(typ), addr)
			return
		}
	}
}

// iomapSpecs are the images the simulated kernel is run against: sparse
// and preallocated (unwritten) files, inline data, bigalloc, block-mapped
// files (ext3 with 1 KiB blocks reaches triple-indirect blocks), and the
// layout image (a physically fragmented file, contiguous extents that
// merge, written next to unwritten blocks).
func iomapSpecs(t *testing.T) map[string]string {
	imgs := map[string]string{"layout": testimg.LayoutImage(t)}
	for _, s := range testimg.Matrix() {
		switch s.Name {
		case "ext4-default", "ext4-inline", "ext4-bigalloc", "ext3-1k", "ext2":
			imgs[s.Name] = testimg.Build(t, s)
		}
	}
	return imgs
}

// TestIomapSimulatedKernel runs the fuse-iomap kernel's side against the
// server: INIT offering FUSE_IOMAP, FUSE_IOMAP_CONFIG, LOOKUP and GETATTR
// (FUSE_ATTR_IOMAP on regular files without inline data, st_ino, blksize),
// then FUSE_IOMAP_BEGIN for buffered reads, direct reads and reports at
// many positions of every regular file. Each reply must pass the kernel's
// checks, and every mapped or unwritten address must be where FIEMAP on
// the kernel's ext4 mount says the block is. Writes are refused with
// EROFS; pushed mappings (IOMAP_UPSERT_MAPPINGS) are held to the same
// rules.
func TestIomapSimulatedKernel(t *testing.T) {
	testimg.RequireKernelMount(t)
	for name, img := range iomapSpecs(t) {
		t.Run(name, func(t *testing.T) {
			want := testimg.KernelWalk(t, img)
			files := kernelFacts(t, img, want)
			k, init := startSim(t, img, true)
			if init.Flags2&abi.InitFlags2Iomap == 0 {
				t.Fatalf("the server declined FUSE_IOMAP on a fuseblk mount")
			}
			bs := uint64(openExt4(t, img).BlockSize())
			check := abi.BeginCheck{BlockSize: uint32(bs), ValidDev: func(d uint32) bool { return d == abi.DevFuseblk }}
			rng := rand.New(rand.NewPCG(1, uint64(len(name))))
			begins := 0
			for _, f := range files {
				e := k.lookup(f.path)
				for _, a := range []fuse.Attr{e.Attr, k.getattr(e.NodeId)} {
					if a.Ino != f.ino || a.Blksize != uint32(bs) {
						t.Errorf("%s: ino %d blksize %d, want %d and %d", f.path, a.Ino, a.Blksize, f.ino, bs)
					}
					if (a.Flags&abi.AttrIomap != 0) == f.inline {
						t.Errorf("%s: attr flags %#x, inline data %v: FUSE_ATTR_IOMAP must be set exactly on files without inline data", f.path, a.Flags, f.inline)
					}
				}
				if f.inline {
					// Inline files are read with FUSE_READ; the kernel
					// never asks for their mappings.
					continue
				}
				positions := []uint64{0, f.size, f.size + bs, 1 << 40}
				if f.size > 0 {
					positions = append(positions, f.size-1, f.size/2)
				}
				for _, x := range f.extent {
					positions = append(positions, x.Logical, x.Logical+x.Length-1, x.Logical+x.Length)
				}
				for range 8 {
					positions = append(positions, rng.Uint64N(f.size+1))
				}
				if len(positions) > 200 {
					rng.Shuffle(len(positions), func(i, j int) { positions[i], positions[j] = positions[j], positions[i] })
					positions = positions[:200]
				}
				for i, pos := range positions {
					count := []uint64{1, 4096, 1 << 20, f.size + 1}[i%4]
					op := []uint32{0, abi.OpDirect, abi.OpReport}[i%3]
					in := abi.BeginIn{OpFlags: op, AttrIno: f.ino, Pos: pos, Count: count}
					errno, out := k.begin(e.NodeId, in)
					begins++
					if errno != 0 {
						t.Errorf("%s: BEGIN %+v: errno %d", f.path, in, errno)
						continue
					}
					if err := check.Check(in, out); err != nil {
						t.Errorf("%s: BEGIN %+v: the kernel would refuse %+v: %v", f.path, in, out, err)
						continue
					}
					checkAgainstFiemap(t, f, bs, out.Read)
				}
				for _, op := range []uint32{abi.OpWrite, abi.OpWrite | abi.OpDirect, abi.OpZero} {
					if errno, _ := k.begin(e.NodeId, abi.BeginIn{OpFlags: op, AttrIno: f.ino, Pos: 0, Count: bs}); errno != -int32(syscall.EROFS) {
						t.Errorf("%s: BEGIN for a write (opflags %#x): errno %d, want EROFS", f.path, op, errno)
					}
				}
				// The kernel echoes the st_ino it was given: a
				// mismatch is refused, not guessed at.
				if errno, _ := k.begin(e.NodeId, abi.BeginIn{AttrIno: f.ino + 1, Count: bs}); errno == 0 {
					t.Errorf("%s: BEGIN with a wrong attr_ino was answered", f.path)
				}
				// END and the other iomap requests of a read-only
				// mount are answered.
				end := abi.EndIn{AttrIno: f.ino, Count: bs, Map: abi.IomapIO{Length: bs, Addr: abi.NullAddr}}
				if errno, _ := k.call(abi.OpIomapEnd, e.NodeId, abi.Marshal(&end)); errno != 0 {
					t.Errorf("%s: FUSE_IOMAP_END: errno %d", f.path, errno)
				}
			}
			byIno := map[uint64]fileFacts{}
			for _, f := range files {
				byIno[f.ino] = f
			}
			for _, u := range k.upserts {
				f, ok := byIno[u.AttrIno]
				if !ok {
					t.Errorf("mappings pushed for unknown inode %d", u.AttrIno)
					continue
				}
				in := abi.BeginIn{AttrIno: u.AttrIno, Pos: u.Read.Offset, Count: 1}
				if err := check.Check(in, abi.BeginOut{Read: u.Read, Write: u.Write}); err != nil {
					t.Errorf("%s: pushed mapping %+v would be refused: %v", f.path, u.Read, err)
				}
				checkAgainstFiemap(t, f, bs, u.Read)
			}
			t.Logf("%d files, %d FUSE_IOMAP_BEGIN requests checked, %d mappings pushed", len(files), begins, len(k.upserts))
		})
	}
}

// TestClassicReadSimulatedKernel is the same server without FUSE_IOMAP:
// no attribute says iomap, FUSE_IOMAP_BEGIN is not served, and FUSE_READ
// and FUSE_LSEEK serve the bytes and the data/hole segments the kernel's
// ext4 mount shows.
func TestClassicReadSimulatedKernel(t *testing.T) {
	testimg.RequireKernelMount(t)
	for name, img := range iomapSpecs(t) {
		t.Run(name, func(t *testing.T) {
			want := testimg.KernelWalk(t, img)
			k, init := startSim(t, img, false)
			if init.Flags2&abi.InitFlags2Iomap != 0 {
				t.Fatal("FUSE_IOMAP accepted without being offered")
			}
			files := 0
			for p, e := range want {
				if e.Mode&syscall.S_IFMT != syscall.S_IFREG {
					continue
				}
				files++
				ent := k.lookup(p)
				if ent.Attr.Flags&abi.AttrIomap != 0 {
					t.Errorf("%s: FUSE_ATTR_IOMAP without iomap", p)
				}
				if files == 1 {
					if errno, _ := k.begin(ent.NodeId, abi.BeginIn{AttrIno: e.Ino, Count: 4096}); errno == 0 {
						t.Errorf("FUSE_IOMAP_BEGIN answered on a connection without iomap")
					}
				}
				// ENOSYS is the server saying it needs no OPEN: the
				// kernel then reads without one (fc->no_open).
				oin := fuse.OpenIn{Flags: syscall.O_RDONLY}
				if errno, _ := k.call(opOpen, ent.NodeId, body(&oin)); errno != 0 && errno != -int32(syscall.ENOSYS) {
					t.Fatalf("OPEN %s: errno %d", p, errno)
				}
				h := sha256.New()
				const chunk = 1 << 20
				for off := int64(0); off < e.Size; off += chunk {
					rin := fuse.ReadIn{Offset: uint64(off), Size: chunk}
					errno, data := k.call(opRead, ent.NodeId, body(&rin))
					if errno != 0 {
						t.Fatalf("READ %s at %d: errno %d", p, off, errno)
					}
					if want := min(chunk, e.Size-off); int64(len(data)) != want {
						t.Fatalf("READ %s at %d: %d bytes, want %d", p, off, len(data), want)
					}
					h.Write(data)
				}
				if got := hex.EncodeToString(h.Sum(nil)); got != e.SHA256 {
					t.Errorf("%s: contents differ from the kernel's (sha256 %s, want %s)", p, got, e.SHA256)
				}
				// (nil: the kernel's own lseek failed, as it does with
				// ENOENT for SEEK_HOLE in an inline file longer than its
				// inline data; testimg.Compare skips those too.)
				if got := k.segments(ent.NodeId, e.Size); e.Segments != nil && fmt.Sprint(got) != fmt.Sprint(e.Segments) {
					t.Errorf("%s: data segments %v, kernel %v", p, got, e.Segments)
				}
			}
			t.Logf("%d files read and sought", files)
		})
	}
}

// segments lists the data segments of a file with SEEK_DATA/SEEK_HOLE, as
// testimg.Walk does on a mount.
func (k *simKernel) segments(node uint64, size int64) [][2]int64 {
	var segs [][2]int64
	seek := func(off int64, whence uint32) (int64, error) {
		in := fuse.LseekIn{Offset: uint64(off), Whence: whence}
		errno, payload := k.call(opLseek, node, body(&in))
		if errno != 0 {
			return 0, syscall.Errno(-errno)
		}
		var out fuse.LseekOut
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out)), unsafe.Sizeof(out)), payload)
		return int64(out.Offset), nil
	}
	for off := int64(0); off < size; {
		d, err := seek(off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break
		}
		if err != nil {
			k.t.Fatalf("SEEK_DATA at %d: %v", off, err)
		}
		h, err := seek(d, unix.SEEK_HOLE)
		if err != nil {
			k.t.Fatalf("SEEK_HOLE at %d: %v", d, err)
		}
		segs = append(segs, [2]int64{d, h})
		off = h
	}
	return segs
}

// execOutput runs a program and returns its combined output.
func execOutput(path string, args ...string) (string, error) {
	out, err := exec.Command(path, args...).CombinedOutput()
	return string(out), err
}
