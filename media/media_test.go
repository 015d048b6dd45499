package media

import (
	"bytes"
	"errors"
	"testing"
)

// Every type WhatsApp sends is accepted when its bytes are of that type,
// and refused as a mismatch when they are not, including the audio and
// video types http.DetectContentType does not know.
func TestPutChecksTheBytesAgainstTheDeclaredType(t *testing.T) {
	pad := func(b []byte) []byte { return append(b, bytes.Repeat([]byte{0x11}, 64)...) }
	ftyp := func(brand string) []byte {
		return pad(append([]byte{0, 0, 0, 0x18, 'f', 't', 'y', 'p'}, brand...))
	}
	png := pad([]byte("\x89PNG\r\n\x1a\n"))
	for _, tc := range []struct {
		declared string
		bytes    []byte
		err      error
	}{
		{"image/png", png, nil},
		{"image/jpeg", png, ErrTypeMismatch},
		{"audio/ogg; codecs=opus", pad([]byte("OggS\x00\x02")), nil},
		{"audio/aac", pad([]byte{0xFF, 0xF1, 0x50, 0x80}), nil},
		{"audio/aac", pad([]byte("ADIF")), nil},
		{"audio/aac", png, ErrTypeMismatch},
		{"audio/amr", pad([]byte("#!AMR\n")), nil},
		{"audio/amr", pad([]byte("#!AMR-WB\n")), ErrTypeMismatch},
		{"audio/mp4", ftyp("M4A "), nil},
		{"audio/mp4", ftyp("3gp4"), ErrTypeMismatch},
		{"video/3gpp", ftyp("3gp5"), nil},
		{"video/3gpp", ftyp("M4A "), ErrTypeMismatch},
		{"video/mp4", ftyp("mp42"), nil},
		{"audio/x-wav", pad([]byte("RIFF")), ErrUnsupportedType},
	} {
		t.Run(tc.declared, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			m, err := s.Put("c1", "u1", tc.declared, bytes.NewReader(tc.bytes))
			if !errors.Is(err, tc.err) {
				t.Fatalf("Put(%s, % x…) = %v, want %v", tc.declared, tc.bytes[:8], err, tc.err)
			}
			if err == nil && (m.Size != int64(len(tc.bytes)) || m.Type != Normalize(tc.declared)) {
				t.Fatalf("meta %+v", m)
			}
		})
	}
}
