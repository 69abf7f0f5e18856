package abi

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"
)

// wireStructs lists every wire structure with the size the ABI gives it,
// and a pointer for Marshal/Unmarshal.
func wireStructs() []struct {
	name string
	size int
	msg  Message
	ptr  any // same as msg, for reflection and binary.Size
} {
	type entry = struct {
		name string
		size int
		msg  Message
		ptr  any
	}
	var out []entry
	add := func(name string, size int, m Message) { out = append(out, entry{name, size, m, m}) }
	add("fuse_iomap_io", 32, &IomapIO{})
	add("fuse_iomap_begin_in", 32, &BeginIn{})
	add("fuse_iomap_begin_out", 64, &BeginOut{})
	add("fuse_iomap_end_in", 72, &EndIn{})
	add("fuse_iomap_ioend_in", 48, &IoendIn{})
	add("fuse_iomap_ioend_out", 8, &IoendOut{})
	add("fuse_iomap_config_in", 64, &ConfigIn{})
	add("fuse_iomap_config_out", 104, &ConfigOut{})
	add("upsert mappings notification", 80, &UpsertMappings{})
	add("inval mappings notification", 48, &InvalMappings{})
	add("dev inval notification", 24, &DevInval{})
	add("fuse_iomap_support", 16, &IomapSupport{})
	add("fuse_backing_map", 16, &BackingMap{})
	return out
}

// TestWireSizes checks each structure's size three ways against the ABI:
// the Go struct's memory size (natural alignment, as the C struct), its
// packed encoding size, and WireSize.
func TestWireSizes(t *testing.T) {
	for _, w := range wireStructs() {
		v := reflect.ValueOf(w.ptr).Elem()
		if got := int(v.Type().Size()); got != w.size {
			t.Errorf("%s: unsafe.Sizeof = %d, want %d", w.name, got, w.size)
		}
		if got := binary.Size(w.ptr); got != w.size {
			t.Errorf("%s: binary.Size = %d, want %d (hidden padding?)", w.name, got, w.size)
		}
		if got := w.msg.WireSize(); got != w.size {
			t.Errorf("%s: WireSize = %d, want %d", w.name, got, w.size)
		}
	}
	// The ones a reader would check first, spelled out.
	if unsafe.Sizeof(ConfigOut{}) != 104 || unsafe.Offsetof(ConfigOut{}.CacheMaxBytes) != 96 || unsafe.Offsetof(ConfigOut{}.BlockSize) != 60 {
		t.Errorf("fuse_iomap_config_out layout: size %d, s_blocksize at %d, cache_maxbytes at %d",
			unsafe.Sizeof(ConfigOut{}), unsafe.Offsetof(ConfigOut{}.BlockSize), unsafe.Offsetof(ConfigOut{}.CacheMaxBytes))
	}
	if unsafe.Offsetof(EndIn{}.Map) != 40 || unsafe.Offsetof(IoendIn{}.Dev) != 40 {
		t.Errorf("end_in.map at %d, ioend_in.dev at %d", unsafe.Offsetof(EndIn{}.Map), unsafe.Offsetof(IoendIn{}.Dev))
	}
}

// fill sets every field of the struct v points to to random values.
func fill(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(r, v.Field(i))
		}
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(r, v.Index(i))
		}
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(r.Uint64())
	case reflect.Int32, reflect.Int64:
		v.SetInt(int64(r.Uint64()))
	default:
		panic("unhandled kind " + v.Kind().String())
	}
}

// TestWireRoundTrip fills each structure with random values, checks that
// Marshal produces exactly what encoding/binary produces from the Go
// struct (so the hand-written offsets follow the field order), and that
// Unmarshal gives the values back.
func TestWireRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, w := range wireStructs() {
		for i := 0; i < 50; i++ {
			fill(r, reflect.ValueOf(w.ptr).Elem())
			got := Marshal(w.msg)
			var ref bytes.Buffer
			if err := binary.Write(&ref, binary.LittleEndian, w.ptr); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, ref.Bytes()) {
				t.Fatalf("%s: Marshal\n%x\nencoding/binary\n%x", w.name, got, ref.Bytes())
			}
			back := reflect.New(reflect.TypeOf(w.ptr).Elem())
			if err := Unmarshal(got, back.Interface().(Message)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.Interface(), w.ptr) {
				t.Fatalf("%s: round trip gave %+v, want %+v", w.name, back.Interface(), w.ptr)
			}
		}
	}
}

// TestUnmarshalShort checks that every buffer shorter than a structure is
// an error, not a panic, and that a longer one decodes its prefix.
func TestUnmarshalShort(t *testing.T) {
	for _, w := range wireStructs() {
		full := bytes.Repeat([]byte{0xA5}, w.size+7)
		for n := 0; n < w.size; n++ {
			if err := Unmarshal(full[:n], w.msg); err == nil {
				t.Errorf("%s: %d of %d bytes decoded without an error", w.name, n, w.size)
			}
		}
		if err := Unmarshal(full, w.msg); err != nil {
			t.Errorf("%s: %d bytes: %v", w.name, len(full), err)
		}
	}
}

// ioc is the kernel's _IOC encoding of an ioctl number.
func ioc(dir, typ, nr, size uint32) uint32 { return dir<<30 | size<<16 | typ<<8 | nr }

// TestIoctlNumbers recomputes the /dev/fuse ioctls from _IOC and the
// argument structures' sizes.
func TestIoctlNumbers(t *testing.T) {
	const none, write, read = 0, 1, 2
	for _, c := range []struct {
		name string
		got  uint32
		want uint32
	}{
		{"FUSE_DEV_IOC_BACKING_OPEN", DevIocBackingOpen, ioc(write, DevIocMagic, 1, uint32(unsafe.Sizeof(BackingMap{})))},
		{"FUSE_DEV_IOC_SYNC_INIT", DevIocSyncInit, ioc(none, DevIocMagic, 3, 0)},
		{"FUSE_DEV_IOC_IOMAP_SUPPORT", DevIocIomapSupport, ioc(read, DevIocMagic, 99, uint32(unsafe.Sizeof(IomapSupport{})))},
		{"FUSE_DEV_IOC_ADD_IOMAP", DevIocAddIomap, ioc(none, DevIocMagic, 101, 0)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, _IOC gives %#x", c.name, c.got, c.want)
		}
	}
	// BACKING_OPEN is released ABI (Linux 6.9): its number is known.
	if DevIocBackingOpen != 0x4010e501 {
		t.Errorf("FUSE_DEV_IOC_BACKING_OPEN = %#x, Linux has 0x4010e501", DevIocBackingOpen)
	}
}

// TestFlagBits checks the bit positions the ABI page spells out, so that
// a typo in a shift shows.
func TestFlagBits(t *testing.T) {
	if InitIomap != 1<<43 {
		t.Errorf("FUSE_IOMAP = %#x, want bit 43", InitIomap)
	}
	if uint64(InitFlags2Iomap)<<32 != InitIomap {
		t.Errorf("FUSE_IOMAP in flags2 = %#x, does not match %#x", InitFlags2Iomap, InitIomap)
	}
	if OpIomapBegin != 4094 || OpFreezeFS != 4089 || OpIomapEnd != 4095 {
		t.Errorf("opcodes moved")
	}
	if TypePureOverwrite != 255 || TypeRetryCache != 254 || TypeNoCache != 253 {
		t.Errorf("FUSE-only mapping types moved")
	}
	if FlagsBegin != FlagNew|FlagDirty|FlagShared|FlagMerged|FlagBoundary|FlagAnonWrite|FlagAtomicBio|FlagWantIomapEnd {
		t.Errorf("FlagsBegin = %#x", FlagsBegin)
	}
	if ConfigAll != 0x7f || AttrIomap != 8 || OpWriteback != 1<<31 || OpSwapfile != 1<<30 {
		t.Errorf("flag values moved")
	}
	if NotifyIomapDevInval != 99 || NotifyIomapUpsertMappings != 100 || NotifyIomapInvalMappings != 101 {
		t.Errorf("notification codes moved")
	}
}
