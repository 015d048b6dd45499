// Package media keeps the files that messages refer to: uploads of the
// REST API (POST /v1/media) and, later, inbound WhatsApp media. Files are
// content-addressed on the local disk, under the data dir, whatever the
// chat store is: the blob of a SHA-256 is written once however often it is
// uploaded. A media id names one upload into one conversation (its metadata:
// conversation, uploader, type, size), so that reading it is authorised like
// the conversation it belongs to. Several engines behind one load balancer
// need the directory on a shared volume (a bucket is future work).
//
// Layout under the directory:
//
//	blobs/<sha256[:2]>/<sha256>   the bytes, read-only
//	meta/<id>.json                Meta of one upload
//	tmp/                          uploads in progress, renamed into blobs/
package media

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"charla"
)

// Size limits per kind of type: WhatsApp's for images and documents.
const (
	MaxImageBytes    = 16 << 20
	MaxDocumentBytes = 100 << 20
)

// rule is an allowed type: what http.DetectContentType must say of its
// bytes (or, for a type it does not know, the signature they must start
// with), and how large it may be.
type rule struct {
	sniffed string
	magic   func(head []byte) bool
	max     int64
}

// matches says whether head is of the rule's type; got is what the bytes
// were taken for, for the error.
func (r rule) matches(head []byte) (ok bool, got string) {
	got = Normalize(http.DetectContentType(head))
	if r.magic != nil {
		return r.magic(head), got
	}
	return got == r.sniffed, got
}

// isoBrand matches an ISO base media file (MP4, M4A, 3GP) whose major
// brand starts with one of prefixes: its first box is ftyp.
func isoBrand(prefixes ...string) func([]byte) bool {
	return func(head []byte) bool {
		if len(head) < 12 || string(head[4:8]) != "ftyp" {
			return false
		}
		for _, p := range prefixes {
			if strings.HasPrefix(string(head[8:12]), p) {
				return true
			}
		}
		return false
	}
}

// isAAC matches AAC in an ADTS stream (a 12-bit sync word, layer 0) or
// an ADIF header.
func isAAC(head []byte) bool {
	return bytes.HasPrefix(head, []byte("ADIF")) || len(head) >= 2 && head[0] == 0xFF && head[1]&0xF6 == 0xF0
}

// isAMR matches AMR narrowband storage (RFC 4867 section 5).
func isAMR(head []byte) bool { return bytes.HasPrefix(head, []byte("#!AMR\n")) }

// allowed is the allow-list of declared types. A type that the sniffer
// cannot tell from others (Office files are zip archives) is accepted when
// the bytes are of that wider kind.
var allowed = map[string]rule{
	"image/jpeg": {sniffed: "image/jpeg", max: MaxImageBytes},
	"image/png":  {sniffed: "image/png", max: MaxImageBytes},
	"image/webp": {sniffed: "image/webp", max: MaxImageBytes},
	"image/gif":  {sniffed: "image/gif", max: MaxImageBytes},
	// WhatsApp's audio and video types; the sniffer knows only some.
	"audio/mpeg":      {sniffed: "audio/mpeg", max: MaxImageBytes},
	"audio/ogg":       {sniffed: "application/ogg", max: MaxImageBytes},
	"audio/aac":       {magic: isAAC, max: MaxImageBytes},
	"audio/amr":       {magic: isAMR, max: MaxImageBytes},
	"audio/mp4":       {magic: isoBrand("M4A", "mp4", "isom"), max: MaxImageBytes},
	"video/mp4":       {sniffed: "video/mp4", max: MaxImageBytes},
	"video/3gpp":      {magic: isoBrand("3gp"), max: MaxImageBytes},
	"application/pdf": {sniffed: "application/pdf", max: MaxDocumentBytes},
	"text/plain":      {sniffed: "text/plain", max: MaxDocumentBytes},
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   {sniffed: "application/zip", max: MaxDocumentBytes},
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         {sniffed: "application/zip", max: MaxDocumentBytes},
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": {sniffed: "application/zip", max: MaxDocumentBytes},
}

// MaxBytes is the largest upload of any type.
const MaxBytes = MaxDocumentBytes

// Errors of Put and Open, for errors.Is.
var (
	ErrUnsupportedType = errors.New("media: type not allowed")
	ErrTypeMismatch    = errors.New("media: the bytes are not of the declared type")
	ErrTooLarge        = errors.New("media: too large for its type")
	ErrEmpty           = errors.New("media: empty file")
	ErrNotFound        = errors.New("media: no such media")
)

// Normalize returns the media type of a Content-Type value (lower case,
// without parameters), "" when it does not parse.
func Normalize(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return mt
}

// Limit returns the size limit of a declared type; ErrUnsupportedType when
// it is not on the allow-list.
func Limit(contentType string) (int64, error) {
	r, ok := allowed[Normalize(contentType)]
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnsupportedType, contentType)
	}
	return r.max, nil
}

// Meta describes one upload.
type Meta struct {
	ID        string        `json:"id"`
	Conv      charla.ConvID `json:"conv"`
	Uploader  string        `json:"uploader"`
	Type      string        `json:"type"`
	Size      int64         `json:"size"`
	SHA256    string        `json:"sha256"`
	CreatedAt time.Time     `json:"created_at"`
}

// Store is a media directory. It is safe for concurrent use: every file is
// written under a temporary name and renamed into place.
type Store struct{ dir string }

// Open opens (creating them) the media directories under dir, private to
// their owner.
func Open(dir string) (*Store, error) {
	for _, d := range []string{"blobs", "meta", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("media: open %s: %w", dir, err)
		}
	}
	return &Store{dir: dir}, nil
}

// Put stores the bytes of r as an upload of declared type into conv by
// uploader. It reads at most the type's limit plus one byte: more is
// ErrTooLarge, as is an *http.MaxBytesError from r. The first 512 bytes
// decide the type (http.DetectContentType, or a signature for the types it
// does not know); a disagreement with the
// declared type is ErrTypeMismatch. The id is derived from the conversation
// and the content, so the same file uploaded twice into one conversation
// gets the same id.
func (s *Store) Put(conv charla.ConvID, uploader, declared string, r io.Reader) (Meta, error) {
	typ := Normalize(declared)
	rl, ok := allowed[typ]
	if !ok {
		return Meta{}, fmt.Errorf("%w: %q", ErrUnsupportedType, declared)
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Meta{}, readErr(err)
	}
	head = head[:n]
	if n == 0 {
		return Meta{}, ErrEmpty
	}
	if ok, got := rl.matches(head); !ok {
		return Meta{}, fmt.Errorf("%w: declared %s, the bytes are %s", ErrTypeMismatch, typ, got)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "up-*")
	if err != nil {
		return Meta{}, fmt.Errorf("media: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(io.MultiReader(bytes.NewReader(head), r), rl.max+1))
	if err != nil {
		return Meta{}, readErr(err)
	}
	if size > rl.max {
		return Meta{}, fmt.Errorf("%w: %s is limited to %d bytes", ErrTooLarge, typ, rl.max)
	}
	if err := tmp.Sync(); err != nil {
		return Meta{}, fmt.Errorf("media: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Meta{}, fmt.Errorf("media: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	blob := s.blobPath(sum)
	if err := os.MkdirAll(filepath.Dir(blob), 0o700); err != nil {
		return Meta{}, fmt.Errorf("media: %w", err)
	}
	if err := os.Rename(tmp.Name(), blob); err != nil {
		return Meta{}, fmt.Errorf("media: %w", err)
	}
	idSum := sha256.Sum256([]byte(string(conv) + "\x00" + sum))
	m := Meta{ID: hex.EncodeToString(idSum[:16]), Conv: conv, Uploader: uploader, Type: typ, Size: size, SHA256: sum,
		CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if err := s.writeMeta(m); err != nil {
		return Meta{}, err
	}
	return m, nil
}

// readErr maps a failure to read the upload.
func readErr(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return fmt.Errorf("media: reading the upload: %w", err)
}

func (s *Store) blobPath(sum string) string { return filepath.Join(s.dir, "blobs", sum[:2], sum) }

func (s *Store) metaPath(id string) string { return filepath.Join(s.dir, "meta", id+".json") }

// writeMeta writes m atomically (temporary file, sync, rename).
func (s *Store) writeMeta(m Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "meta-*")
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("media: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("media: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("media: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.metaPath(m.ID)); err != nil {
		return fmt.Errorf("media: %w", err)
	}
	return nil
}

// validID reports whether id has the form Put gives: 32 lower-case hex
// digits, so that no id can name a path outside meta/.
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Stat returns the metadata of id; ErrNotFound when there is none.
func (s *Store) Stat(id string) (Meta, error) {
	if !validID(id) {
		return Meta{}, ErrNotFound
	}
	b, err := os.ReadFile(s.metaPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Meta{}, ErrNotFound
	}
	if err != nil {
		return Meta{}, fmt.Errorf("media: %w", err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("media %s: malformed metadata: %w", id, err)
	}
	return m, nil
}

// Open returns the bytes of m, which the caller closes.
func (s *Store) Open(m Meta) (*os.File, error) {
	f, err := os.Open(s.blobPath(m.SHA256))
	if err != nil {
		return nil, fmt.Errorf("media %s: %w", m.ID, err)
	}
	return f, nil
}
