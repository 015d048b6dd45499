package soapsim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"charla/soapbridge"
)

// DefaultCatalogueSize is how many items Generate makes when Options asks for
// none in particular: SKU-00001 to SKU-10000.
const DefaultCatalogueSize = 10_000

// catalogueEpoch is the UpdatedAt base of generated and loaded items, fixed so
// that every run answers the same until a reservation changes an item.
var catalogueEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Words for generated names: 16 adjectives × 16 materials × 16 nouns give
// 4,096 combinations, and a model number makes names unique enough to search.
var (
	adjectives = []string{"Blue", "Red", "Green", "Black", "White", "Compact", "Deluxe", "Classic",
		"Rugged", "Slim", "Large", "Small", "Smart", "Eco", "Pro", "Mini"}
	materials = []string{"Ceramic", "Steel", "Wooden", "Cotton", "Leather", "Glass", "Bamboo", "Copper",
		"Plastic", "Wool", "Linen", "Stone", "Carbon", "Silicone", "Aluminium", "Paper"}
	nouns = []string{"Mug", "Lamp", "Chair", "Backpack", "Notebook", "Kettle", "Blanket", "Bottle",
		"Speaker", "Clock", "Vase", "Towel", "Cable", "Jacket", "Pan", "Tray"}
	warehouses = []string{"MAD1", "BCN1", "VLC1", "SEV1", "BIO1"}
)

// SKU returns the i-th generated SKU (1-based): SKU(42) is "SKU-00042".
func SKU(i int) string { return fmt.Sprintf("SKU-%05d", i) }

// Generate returns n items, SKU(1) to SKU(n), whose names, quantities,
// warehouses and update times come from a PRNG seeded with seed: the same
// seed gives the same catalogue on every run and machine (math/rand/v2's PCG
// is specified, not an implementation detail). About 5 % are out of stock.
func Generate(seed uint64, n int) []soapbridge.Item {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	items := make([]soapbridge.Item, n)
	for i := range items {
		qty := rng.IntN(500) + 1
		if rng.IntN(20) == 0 {
			qty = 0
		}
		items[i] = soapbridge.Item{
			SKU: SKU(i + 1),
			Name: fmt.Sprintf("%s %s %s %d", adjectives[rng.IntN(len(adjectives))],
				materials[rng.IntN(len(materials))], nouns[rng.IntN(len(nouns))], 100+rng.IntN(900)),
			Quantity:  qty,
			Warehouse: warehouses[rng.IntN(len(warehouses))],
			UpdatedAt: catalogueEpoch.Add(time.Duration(rng.IntN(365*24*60)) * time.Minute),
		}
	}
	return items
}

// CSVError is one bad line of a catalogue CSV.
type CSVError struct {
	// Line is the 1-based line number in the file.
	Line int
	// Problem says what is wrong with it.
	Problem string
}

// Error reads "line <n>: <problem>".
func (e *CSVError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Problem) }

// maxCSVErrors bounds how many bad lines LoadCSV reports: enough to fix a
// file in one round, not a wall of text for a file in the wrong format.
const maxCSVErrors = 20

// LoadCSV reads a catalogue as CSV lines "sku,name,quantity,warehouse", with
// an optional header line naming exactly those columns. Quantities are
// non-negative integers; SKUs must be unique; no field may be empty. Every
// item's UpdatedAt is the same fixed time. It reports every bad line (up to
// 20, each a *CSVError, joined with errors.Join), not just the first.
func LoadCSV(r io.Reader) ([]soapbridge.Item, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // counted here, to report the line and go on
	cr.TrimLeadingSpace = true
	var (
		items []soapbridge.Item
		errs  []error
		more  int
		seen  = map[string]int{}
	)
	bad := func(line int, format string, args ...any) {
		if len(errs) < maxCSVErrors {
			errs = append(errs, &CSVError{Line: line, Problem: fmt.Sprintf(format, args...)})
		} else {
			more++
		}
	}
	for first := true; ; first = false {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A quoting error leaves the reader's position uncertain:
			// report it and stop rather than guess at the following lines.
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				bad(pe.Line, "%v", pe.Err)
			} else {
				errs = append(errs, err)
			}
			break
		}
		line, _ := cr.FieldPos(0)
		if first && isHeader(rec) {
			continue
		}
		if len(rec) != 4 {
			bad(line, "has %d fields, want 4 (sku,name,quantity,warehouse)", len(rec))
			continue
		}
		sku, name, qtyText, wh := strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1]), strings.TrimSpace(rec[2]), strings.TrimSpace(rec[3])
		ok := true
		if sku == "" {
			bad(line, "sku is empty")
			ok = false
		} else if prev, dup := seen[sku]; dup {
			bad(line, "sku %q already on line %d", sku, prev)
			ok = false
		}
		if name == "" {
			bad(line, "name is empty")
			ok = false
		}
		qty, err := strconv.Atoi(qtyText)
		if err != nil || qty < 0 {
			bad(line, "quantity %q is not a non-negative integer", qtyText)
			ok = false
		}
		if wh == "" {
			bad(line, "warehouse is empty")
			ok = false
		}
		if !ok {
			continue
		}
		seen[sku] = line
		items = append(items, soapbridge.Item{SKU: sku, Name: name, Quantity: qty, Warehouse: wh, UpdatedAt: catalogueEpoch})
	}
	if more > 0 {
		errs = append(errs, fmt.Errorf("and %d more bad lines", more))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("soapsim: catalogue CSV: %w", errors.Join(errs...))
	}
	if len(items) == 0 {
		return nil, errors.New("soapsim: catalogue CSV: no items")
	}
	return items, nil
}

// LoadCSVFile is LoadCSV on the file at path.
func LoadCSVFile(path string) ([]soapbridge.Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("soapsim: catalogue: %w", err)
	}
	defer f.Close()
	items, err := LoadCSV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return items, nil
}

func isHeader(rec []string) bool {
	want := []string{"sku", "name", "quantity", "warehouse"}
	if len(rec) != len(want) {
		return false
	}
	for i, w := range want {
		if !strings.EqualFold(strings.TrimSpace(rec[i]), w) {
			return false
		}
	}
	return true
}
