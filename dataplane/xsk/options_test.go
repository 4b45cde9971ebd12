package xsk

import (
	"errors"
	"testing"
)

// TestPortOptionsValidate: the bounds the configuration relies on (it
// maps OptionError.Field to its keys), including the UMEM size that once
// let `frames: 0x10000000` through to a failing mmap.
func TestPortOptionsValidate(t *testing.T) {
	tests := []struct {
		o           PortOptions
		field, want string // "" field: valid
	}{
		{DefaultPortOptions(), "", ""},
		{PortOptions{NumFrames: 1 << 19, FrameSize: 2048, RingSize: 1 << 18, ZeroCopy: "on"}, "", ""},
		{PortOptions{NumFrames: 1 << 18, FrameSize: 4096, RingSize: 4096}, "", ""},
		{PortOptions{NumFrames: 1 << 20, FrameSize: 2048, RingSize: 4096}, "num_frames",
			"xsk num_frames 1048576: must be at most 524288 with frame_size 2048 (the UMEM, frames × frame_size, is at most 1024 MiB per socket)"},
		{PortOptions{NumFrames: 1 << 28, FrameSize: 4096, RingSize: 4096}, "num_frames",
			"xsk num_frames 268435456: must be at most 262144 with frame_size 4096 (the UMEM, frames × frame_size, is at most 1024 MiB per socket)"},
		{PortOptions{NumFrames: 1000, FrameSize: 2048, RingSize: 256}, "num_frames", "xsk num_frames 1000: must be a power of two"},
		{PortOptions{NumFrames: -8, FrameSize: 2048, RingSize: 256}, "num_frames", "xsk num_frames -8: must be a power of two"},
		{PortOptions{NumFrames: 8192, FrameSize: 8192, RingSize: 256}, "frame_size", "xsk frame_size 8192: must be 2048 or 4096"},
		{PortOptions{NumFrames: 8192, FrameSize: 1024, RingSize: 256}, "frame_size", "xsk frame_size 1024: must be 2048 or 4096"},
		{PortOptions{NumFrames: 8192, FrameSize: 2048, RingSize: 0}, "ring_size", "xsk ring_size 0: must be a power of two"},
		{PortOptions{NumFrames: 8192, FrameSize: 2048, RingSize: 8192}, "ring_size", "xsk ring_size 8192: must be at most num_frames/2 (4096)"},
		{PortOptions{NumFrames: 8192, FrameSize: 2048, RingSize: 4096, ZeroCopy: "yes"}, "zero_copy", `xsk zero_copy "yes": must be one of auto, on, off`},
	}
	for _, tc := range tests {
		err := tc.o.Validate()
		if tc.field == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.o, err)
			}
			continue
		}
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Field != tc.field || err.Error() != tc.want {
			t.Errorf("%+v: %v, want %s: %q", tc.o, err, tc.field, tc.want)
		}
	}
}
