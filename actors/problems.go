package actors

import (
	"fmt"
	"time"
)

// problems collects every problem of a configuration, so that an operator
// fixes it in one round; each names its setting as the flag does.
type problems struct{ errs []error }

func (p *problems) bad(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf(format, args...))
}

func (p *problems) add(errs ...error) { p.errs = append(p.errs, errs...) }

func (p *problems) positive(name string, d time.Duration) {
	if d <= 0 {
		p.bad("%s must be positive (got %s)", name, d)
	}
}

func (p *problems) atLeast(name string, v, min int) {
	if v < min {
		p.bad("%s must be at least %d (got %d)", name, min, v)
	}
}

// backoff checks a retry backoff's base and ceiling, named prefix+"base"
// and prefix+"max".
func (p *problems) backoff(prefix string, base, ceiling time.Duration) {
	p.positive(prefix+"base", base)
	p.positive(prefix+"max", ceiling)
	if base > 0 && ceiling > 0 && ceiling < base {
		p.bad("%smax (%s) must not be shorter than %sbase (%s)", prefix, ceiling, prefix, base)
	}
}
