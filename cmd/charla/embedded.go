package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"charla/store/bolt"
	"charla/store/pebble"
)

// The embedded store's files under the data dir: the append-only log
// (pebble), and the bbolt file of earlier versions, imported once and then
// renamed so that the import is known to be done.
const (
	embeddedDir  = "charla.pebble"
	legacyFile   = "charla.db"
	importedFile = "charla.db.imported"
)

// openEmbedded opens the embedded store, importing a legacy bbolt store
// first when one is there (see importLegacy).
func openEmbedded(ctx context.Context, dataDir string, log zerolog.Logger) (*pebble.Store, error) {
	opts := pebble.DefaultOptions()
	opts.Logger = log.With().Str("component", "pebble").Logger()
	st, err := pebble.Open(ctx, filepath.Join(dataDir, embeddedDir), opts)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := importLegacy(ctx, dataDir, st, log); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// importLegacy copies data/charla.db (the bbolt store of earlier versions)
// into st and renames it to charla.db.imported. It runs whenever charla.db
// exists, not only on an empty st: an import cut short by a crash resumes
// where it stopped (pebble.ImportBolt is idempotent), and only the rename
// marks it done.
func importLegacy(ctx context.Context, dataDir string, st *pebble.Store, log zerolog.Logger) error {
	path := filepath.Join(dataDir, legacyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	src, err := bolt.Open(path)
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	defer src.Close()
	log.Info().Str("from", path).Msg("importing the bbolt store of an earlier version into the append-only log")
	start, last := time.Now(), time.Now()
	stats, err := pebble.ImportBolt(ctx, src, st, func(p pebble.ImportProgress) {
		if time.Since(last) >= 2*time.Second || p.Done == p.Total {
			last = time.Now()
			log.Info().Int("conversations_done", p.Done).Int("conversations", p.Total).Int("messages", p.Messages).Msg("importing")
		}
	})
	if err != nil {
		return fmt.Errorf("import %s (it resumes at the next start): %w", path, err)
	}
	if err := src.Close(); err != nil {
		return fmt.Errorf("import %s: close: %w", path, err)
	}
	if err := os.Rename(path, filepath.Join(dataDir, importedFile)); err != nil {
		return fmt.Errorf("import %s: mark done: %w", path, err)
	}
	log.Info().Int("conversations", stats.Conversations).Int("messages", stats.Messages).Int("already_present", stats.Present).
		Int("read_cursors", stats.Cursors).Dur("took", time.Since(start)).Str("kept_as", importedFile).Msg("import done")
	return nil
}

// migrateStore is `charla migrate-store`: the import serve does at start,
// on its own, for operators who want it done (and timed) before an upgrade.
func migrateStore(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var dataDir string
	flags := flagSet{{name: "data-dir", env: "CHARLA_DATA_DIR", usage: "directory of the embedded store", value: strVar(&dataDir, "./data")}}
	err := flags.parse(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "charla migrate-store:\n%s\n", indent(err))
		return 2
	}
	if _, err := os.Stat(filepath.Join(dataDir, legacyFile)); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stdout, "nothing to import: %s has no %s\n", dataDir, legacyFile)
		return 0
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).With().Timestamp().Logger()
	st, err := openEmbedded(ctx, dataDir, log)
	if err != nil {
		fmt.Fprintf(stderr, "charla migrate-store: %v\n", err)
		return 1
	}
	if err := st.Close(); err != nil {
		fmt.Fprintf(stderr, "charla migrate-store: close: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "imported %s into %s\n", filepath.Join(dataDir, legacyFile), filepath.Join(dataDir, embeddedDir))
	return 0
}
