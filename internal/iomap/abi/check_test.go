package abi

import (
	"errors"
	"fmt"
	"testing"
)

func devOne(d uint32) bool { return d == 1 }

// goodBegin is a reply the kernel accepts: a mapped read of 16 KiB at
// device byte 1 MiB, PURE_OVERWRITE in the write slot.
func goodBegin() (BeginIn, BeginOut) {
	in := BeginIn{Pos: 4096 + 100, Count: 8192}
	m := testMapping{Offset: 4096, Length: 16384, Addr: 1 << 20, Type: TypeMapped}
	return in, m.Reply(1)
}

// TestCheckBeginReplyAccepts checks that replies a read-only server sends
// pass: each mapping type, at the edges of the range.
func TestCheckBeginReplyAccepts(t *testing.T) {
	in, out := goodBegin()
	if err := CheckBeginReply(in, out, 4096, devOne); err != nil {
		t.Fatalf("good reply refused: %v", err)
	}
	for _, m := range []testMapping{
		{Offset: 0, Length: 4096, Addr: NullAddr, Type: TypeInline},
		{Offset: 4096, Length: 4096, Addr: NullAddr, Type: TypeHole},
		{Offset: 4096, Length: 1 << 40, Addr: 0, Type: TypeUnwritten},
		{Offset: 1<<63 - 4096, Length: 4096, Addr: NullAddr, Type: TypeHole},
	} {
		in := BeginIn{Pos: m.Offset + m.Length - 1, Count: 1}
		if err := CheckBeginReply(in, m.Reply(1), 4096, devOne); err != nil {
			t.Errorf("%v: %v", m, err)
		}
	}
	// A write with PURE_OVERWRITE is accepted by the checks (a read-only
	// server refuses it before replying, but the kernel would not).
	in.OpFlags = OpWrite
	if err := CheckBeginReply(in, out, 4096, devOne); err != nil {
		t.Errorf("write with pure overwrite: %v", err)
	}
}

// TestCheckBeginReplyRefuses breaks a good reply in every way the kernel
// checks, one at a time, and expects the rule that names it.
func TestCheckBeginReplyRefuses(t *testing.T) {
	cases := []struct {
		rule, slot string
		edit       func(in *BeginIn, out *BeginOut, c *BeginCheck)
	}{
		{"type-unknown", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Type = 5 }},
		{"type-unknown", "write", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Write.Type = 0xFFFF }},
		{"flags-unknown", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Flags = FlagSizeChanged }},
		{"length-zero", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Length = 0 }},
		{"offset-unaligned", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Offset += 512 }},
		{"length-unaligned", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Length += 512 }},
		{"length-unaligned", "write", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Write.Length -= 1 }},
		{"range-overflow", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Length = -o.Read.Offset }},
		{"offset-past-maxbytes", "read", func(i *BeginIn, o *BeginOut, _ *BeginCheck) {
			o.Read.Offset, o.Write.Offset, i.Pos = 1<<63, 1<<63, 1<<63
		}},
		{"offset-past-maxbytes", "read", func(_ *BeginIn, _ *BeginOut, c *BeginCheck) { c.MaxBytes = 4096 }},
		{"block-size", "read", func(_ *BeginIn, _ *BeginOut, c *BeginCheck) { c.BlockSize = 3000 }},
		{"dev-null", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Dev = DevNull }},
		{"addr-null", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Addr = NullAddr }},
		{"addr-null", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Type, o.Read.Addr = TypeUnwritten, NullAddr }},
		{"dev-not-null", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Type = TypeHole }},
		{"addr-not-null", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Type, o.Read.Dev = TypeHole, 0 }},
		{"addr-not-null", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Type, o.Read.Dev = TypeInline, 0 }},
		{"dev-not-null", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) {
			o.Read.Type, o.Read.Addr = TypeDelalloc, NullAddr
		}},
		{"pure-overwrite-in-read", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read = o.Write }},
		{"dev-not-null", "write", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Write.Dev = 1 }},
		{"addr-not-null", "write", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Write.Addr = 0 }},
		{"flags-not-zero", "write", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Write.Flags = FlagNew }},
		{"retry-cache-no-cache", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) {
			o.Read = IomapIO{Offset: o.Read.Offset, Length: o.Read.Length, Addr: NullAddr, Type: TypeRetryCache}
		}},
		{"flags-not-zero", "read", func(_ *BeginIn, o *BeginOut, c *BeginCheck) {
			c.CachesMappings = true
			o.Read = IomapIO{Offset: o.Read.Offset, Length: o.Read.Length, Addr: NullAddr, Type: TypeRetryCache, Flags: FlagDirty}
		}},
		{"nocache-in-begin", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) {
			o.Read = IomapIO{Offset: o.Read.Offset, Length: o.Read.Length, Addr: NullAddr, Type: TypeNoCache}
		}},
		{"addr-overflow", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Addr = NullAddr - 4096 }},
		{"pos-not-covered", "read", func(i *BeginIn, _ *BeginOut, _ *BeginCheck) { i.Pos = 4095 }},
		{"pos-not-covered", "read", func(i *BeginIn, _ *BeginOut, _ *BeginCheck) { i.Pos = 4096 + 16384 }},
		{"pos-not-covered", "write", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Write.Offset += 4096 }},
		{"pos-not-covered", "write", func(i *BeginIn, o *BeginOut, _ *BeginCheck) { i.Pos, o.Write.Length = 8192+5, 4096 }},
		{"dev-unregistered", "read", func(_ *BeginIn, o *BeginOut, _ *BeginCheck) { o.Read.Dev = 2 }},
		{"dev-unregistered", "read", func(_ *BeginIn, o *BeginOut, c *BeginCheck) { c.ValidDev = nil }},
		{"dev-unregistered", "read", func(_ *BeginIn, o *BeginOut, c *BeginCheck) {
			c.ValidDev = func(uint32) bool { return true }
			o.Read.Dev = 1<<31 - 1
		}},
		{"dev-unregistered", "write", func(i *BeginIn, o *BeginOut, _ *BeginCheck) {
			i.OpFlags = OpWrite | OpDirect
			o.Write = o.Read
			o.Write.Dev = 7
		}},
		{"atomic-no-flag", "read", func(i *BeginIn, _ *BeginOut, _ *BeginCheck) { i.OpFlags = OpWrite | OpAtomic }},
		{"atomic-not-mapped", "write", func(i *BeginIn, o *BeginOut, _ *BeginCheck) {
			i.OpFlags = OpWrite | OpAtomic
			o.Write = IomapIO{Offset: o.Read.Offset, Length: o.Read.Length, Addr: NullAddr, Type: TypeHole}
		}},
		{"retry-cache-uncached-op", "", func(i *BeginIn, o *BeginOut, c *BeginCheck) {
			c.CachesMappings = true
			i.OpFlags = OpAtomic
			o.Read = IomapIO{Offset: o.Read.Offset, Length: o.Read.Length, Addr: NullAddr, Type: TypeRetryCache}
		}},
	}
	for _, c := range cases {
		in, out := goodBegin()
		chk := BeginCheck{BlockSize: 4096, ValidDev: devOne}
		c.edit(&in, &out, &chk)
		err := chk.Check(in, out)
		var re *ReplyError
		if !errors.As(err, &re) {
			t.Errorf("%s/%s: got %v, want a refusal", c.slot, c.rule, err)
			continue
		}
		if re.Rule != c.rule || re.Slot != c.slot {
			t.Errorf("%s/%s: refused by %s/%s: %v", c.slot, c.rule, re.Slot, re.Rule, err)
		}
	}
	// The other half of the device rules: a write mapping that is not
	// PURE_OVERWRITE is only looked up for writes, and a RETRY_CACHE read
	// skips the lookup.
	in, out := goodBegin()
	out.Write = out.Read
	out.Write.Dev = 7
	if err := CheckBeginReply(in, out, 4096, devOne); err != nil {
		t.Errorf("read with an unregistered write device: %v", err)
	}
	out.Read = IomapIO{Offset: out.Read.Offset, Length: out.Read.Length, Addr: NullAddr, Type: TypeRetryCache}
	if err := (BeginCheck{BlockSize: 4096, CachesMappings: true}).Check(in, out); err != nil {
		t.Errorf("retry cache: %v", err)
	}
}

// TestCheckConfigReply checks that a good config passes and that each
// rule can fail.
func TestCheckConfigReply(t *testing.T) {
	good := func() ConfigOut {
		c := ConfigOut{Flags: ConfigAll, UUIDLen: 16, BlockSize: 4096, MaxLinks: 65000, TimeGran: 1,
			TimeMin: -1 << 31, TimeMax: 1<<34 - 1, MaxBytes: 16 << 40, CacheMaxBytes: 1 << 20}
		copy(c.SID[:], "loop0")
		return c
	}
	if err := CheckConfigReply(good()); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for _, c := range []struct {
		rule string
		edit func(*ConfigOut)
	}{
		{"flags-unknown", func(c *ConfigOut) { c.Flags |= 1 << 7 }},
		{"uuid-len", func(c *ConfigOut) { c.UUIDLen = 17 }},
		{"pad-not-zero", func(c *ConfigOut) { c.Pad[2] = 1 }},
		{"time-gran", func(c *ConfigOut) { c.TimeGran = 0 }},
		{"time-gran", func(c *ConfigOut) { c.TimeGran = 1000000001 }},
		{"maxbytes", func(c *ConfigOut) { c.MaxBytes = -1 }},
		{"blocksize", func(c *ConfigOut) { c.BlockSize = 256 }},
		{"blocksize", func(c *ConfigOut) { c.BlockSize = 3072 }},
		{"blocksize", func(c *ConfigOut) { c.BlockSize = 128 << 10 }},
	} {
		cfg := good()
		c.edit(&cfg)
		var re *ReplyError
		if err := CheckConfigReply(cfg); !errors.As(err, &re) || re.Rule != c.rule {
			t.Errorf("%s: got %v", c.rule, err)
		}
	}
	// Fields whose flag is clear are not looked at.
	cfg := good()
	cfg.Flags = ConfigSID
	cfg.TimeGran, cfg.MaxBytes, cfg.BlockSize = 0, -5, 7
	if err := CheckConfigReply(cfg); err != nil {
		t.Errorf("unflagged fields checked: %v", err)
	}
}

// testMapping is a read mapping as package iomap's engine builds them.
type testMapping struct {
	Offset, Length, Addr uint64
	Type                 uint16
}

func (m testMapping) String() string {
	return fmt.Sprintf("%s [%d, +%d) at %d", TypeName(m.Type), m.Offset, m.Length, m.Addr)
}

// Reply is the read-only server's reply for the mapping on device dev.
func (m testMapping) Reply(dev uint32) BeginOut {
	io := IomapIO{Offset: m.Offset, Length: m.Length, Addr: m.Addr, Type: m.Type}
	if m.Type == TypeMapped || m.Type == TypeUnwritten {
		io.Dev = dev
	} else {
		io.Addr = NullAddr
	}
	return ReadOnlyReply(io)
}
