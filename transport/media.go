package transport

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"charla"
	"charla/media"
)

// multipartSlack is what a multipart envelope may add to a file's size
// (boundaries, part headers) before the Content-Length check refuses it.
const multipartSlack = 64 << 10

// mediaReady answers 503 unless media is configured.
func (s *Server) mediaReady(w http.ResponseWriter) bool {
	if s.cfg.Media == nil {
		writeProblemStatus(w, http.StatusServiceUnavailable, charla.Errorf(charla.CodeUnavailable, "media is not configured on this server"))
		return false
	}
	return true
}

// authorizeConv authenticates r and checks that its user may use conv,
// answering 401, 400 or 403 otherwise.
func (s *Server) authorizeConv(w http.ResponseWriter, r *http.Request, conv charla.ConvID) (Identity, bool) {
	id, err := s.cfg.Auth.Authenticate(r)
	if err != nil {
		writeProblemStatus(w, http.StatusUnauthorized, charla.AsError(err))
		return Identity{}, false
	}
	if e := conv.Validate(); e != nil {
		writeProblemStatus(w, http.StatusBadRequest, charla.AsError(e))
		return Identity{}, false
	}
	if !id.User.CanAccess(conv) {
		writeProblemStatus(w, http.StatusForbidden, charla.Errorf(charla.CodeForbidden, "%s may not use conversation %s", id.User.ID, conv))
		return Identity{}, false
	}
	return id, true
}

// handleMediaUpload is POST /v1/media?conv=…: a raw body with its
// Content-Type, or multipart/form-data with the file in the part "file".
// Sizes are refused from Content-Length before anything is read, and the
// body is read through http.MaxBytesReader whatever it announced.
func (s *Server) handleMediaUpload(w http.ResponseWriter, r *http.Request) {
	if !s.mediaReady(w) {
		return
	}
	id, ok := s.authorizeConv(w, r, charla.ConvID(r.URL.Query().Get("conv")))
	if !ok {
		return
	}
	conv := charla.ConvID(r.URL.Query().Get("conv"))
	declared := r.Header.Get("Content-Type")
	var body io.Reader
	if media.Normalize(declared) == "multipart/form-data" {
		if r.ContentLength > media.MaxBytes+multipartSlack {
			writeProblemStatus(w, http.StatusRequestEntityTooLarge, charla.Errorf(charla.CodeTooLarge, "the largest upload is %d bytes", media.MaxBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, media.MaxBytes+multipartSlack)
		mr, err := r.MultipartReader()
		if err != nil {
			writeProblemStatus(w, http.StatusBadRequest, charla.Errorf(charla.CodeBadRequest, "multipart body: %v", err))
			return
		}
		for {
			p, err := mr.NextPart()
			if err != nil {
				writeProblemStatus(w, http.StatusBadRequest, charla.Errorf(charla.CodeBadRequest, `multipart body has no part "file"`))
				return
			}
			if p.FormName() == "file" {
				declared, body = p.Header.Get("Content-Type"), p
				break
			}
		}
	} else {
		limit, err := media.Limit(declared)
		if err != nil {
			writeProblemStatus(w, http.StatusUnsupportedMediaType, charla.Errorf(charla.CodeBadRequest, "Content-Type %q is not an allowed media type", declared))
			return
		}
		if r.ContentLength > limit {
			writeProblemStatus(w, http.StatusRequestEntityTooLarge, charla.Errorf(charla.CodeTooLarge, "%s is limited to %d bytes", media.Normalize(declared), limit))
			return
		}
		body = http.MaxBytesReader(w, r.Body, limit+1)
	}
	m, err := s.cfg.Media.Put(conv, id.User.ID, declared, body)
	switch {
	case errors.Is(err, media.ErrUnsupportedType), errors.Is(err, media.ErrTypeMismatch):
		writeProblemStatus(w, http.StatusUnsupportedMediaType, charla.Errorf(charla.CodeBadRequest, "%s", strings.TrimPrefix(err.Error(), "media: ")))
	case errors.Is(err, media.ErrTooLarge):
		writeProblemStatus(w, http.StatusRequestEntityTooLarge, charla.Errorf(charla.CodeTooLarge, "%s", strings.TrimPrefix(err.Error(), "media: ")))
	case errors.Is(err, media.ErrEmpty):
		writeProblemStatus(w, http.StatusBadRequest, charla.Errorf(charla.CodeBadRequest, "the file is empty"))
	case err != nil:
		s.log.Error().Err(err).Str("conv", string(conv)).Msg("media upload failed")
		writeProblemStatus(w, http.StatusInternalServerError, charla.AsError(err))
	default:
		w.Header().Set("Location", "/v1/media/"+m.ID)
		writeJSON(w, http.StatusCreated, m)
	}
}

// handleMediaGet is GET /v1/media/{id}: the bytes, to whoever may use the
// conversation they were uploaded into. They are served with their checked
// type, nosniff, and as an attachment unless they are an image, so that an
// upload can never run as a page of this origin.
func (s *Server) handleMediaGet(w http.ResponseWriter, r *http.Request) {
	if !s.mediaReady(w) {
		return
	}
	if _, err := s.cfg.Auth.Authenticate(r); err != nil {
		writeProblemStatus(w, http.StatusUnauthorized, charla.AsError(err))
		return
	}
	m, err := s.cfg.Media.Stat(r.PathValue("id"))
	if errors.Is(err, media.ErrNotFound) {
		writeProblemStatus(w, http.StatusNotFound, charla.Errorf(charla.CodeNotFound, "no media %q", r.PathValue("id")))
		return
	}
	if err != nil {
		s.log.Error().Err(err).Msg("media stat failed")
		writeProblemStatus(w, http.StatusInternalServerError, charla.AsError(err))
		return
	}
	if _, ok := s.authorizeConv(w, r, m.Conv); !ok {
		return
	}
	f, err := s.cfg.Media.Open(m)
	if err != nil {
		s.log.Error().Err(err).Msg("media open failed")
		writeProblemStatus(w, http.StatusInternalServerError, charla.AsError(err))
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", m.Type)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	h.Set("Content-Security-Policy", "sandbox")
	if !strings.HasPrefix(m.Type, "image/") {
		h.Set("Content-Disposition", `attachment; filename="`+m.ID+`"`)
	}
	h.Set("ETag", strconv.Quote(m.SHA256))
	http.ServeContent(w, r, "", m.CreatedAt, f)
}
