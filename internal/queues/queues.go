// Package queues reads CERTMAIL_QUEUES, the weighted list of asynq queues
// the workers serve. The workers, the scheduler, the API, dev and the CLI's
// enqueue and schedule commands read the same setting, so that a task or
// schedule for a queue no worker serves is refused where it enters instead
// of waiting forever; dlq purge reads it for the queues whose dead letters
// it deletes. certmail task and the other dlq commands do not: they work on
// tasks of any queue. A
// queue name is one that tasks.ValidQueueName accepts, the rule the Go
// constructors apply too, except Reserved, which no served queue may have
// (CheckServed says so). AsynqKey names the keys asynq keeps for a queue,
// and AsynqQueuesKey its set of queues, for the few that certmail reads or
// writes itself.
package queues

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/certmail/certmail/tasks"
)

// Default is CERTMAIL_QUEUES's default.
const Default = "critical=6,default=3,bulk=1"

// NameRule says what tasks.ValidQueueName accepts, for the messages of
// every entry point that refuses a queue name: "a name is " + NameRule.
const NameRule = "1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"

// Reserved is the one name tasks.ValidQueueName accepts that no list of
// served queues may hold: it is the queue label under which the queue
// metrics (queuestats.OtherQueues) sum the queues that no process serves,
// so a served queue of that name would have their figures added to its
// own. A raw producer's queue of that name is one of those it sums.
const Reserved = "other"

// CheckServed reports why name cannot be a served queue: a name
// tasks.ValidQueueName refuses, or Reserved.
func CheckServed(name string) error {
	if name == Reserved {
		return fmt.Errorf("queue %q: the name is reserved for the metrics of the queues no process serves", name)
	}
	return checkName(name)
}

// checkName reports why name cannot be a queue's: a name
// tasks.ValidQueueName refuses.
func checkName(name string) error {
	if !tasks.ValidQueueName(name) {
		return fmt.Errorf("queue %.64q: a name is "+NameRule, name)
	}
	return nil
}

// MaxWeight is the largest weight a queue may have. Before every fetch a
// worker's asynq builds and shuffles a list holding each queue's name as
// many times as its weight: a weight of 3 000 000 took a worker with no task
// at all past one core and 220 MB. 100 to 1 is more contrast between two
// queues than a worker needs.
const MaxWeight = 100

// Parse reads "critical=6,default=3,bulk=1": names that
// tasks.ValidQueueName accepts (1 to 63 characters of a-z, 0-9, '_' or '-'
// starting with a letter or digit) but Reserved, each with a weight from 1
// to MaxWeight, none twice.
func Parse(s string) (map[string]int, error) { return parse(s, true) }

// ParseNames reads a list of queue names for a command to which weights
// mean nothing (dlq purge): "bulk,default", or CERTMAIL_QUEUES as the
// workers read it, "critical=6,default=3,bulk=1". A name is checked as Parse
// checks it, but Reserved is taken (a raw producer's queue may bear it), none twice, and so is a weight given (up to MaxWeight, so that
// what ParseNames takes the workers take too). It returns the names,
// sorted.
func ParseNames(s string) ([]string, error) {
	qs, err := parse(s, false)
	if err != nil {
		return nil, err
	}
	return Names(qs), nil
}

// parse reads Parse's list; unless weighted, a name may come without its
// weight, which is then 0.
func parse(s string, weighted bool) (map[string]int, error) {
	qs := map[string]int{}
	for part := range strings.SplitSeq(s, ",") {
		name, weight, hasWeight := strings.Cut(strings.TrimSpace(part), "=")
		w, badWeight := 0, false
		if hasWeight || weighted {
			n, err := strconv.Atoi(weight)
			w, badWeight = n, err != nil || n < 1
		}
		switch {
		case !badWeight && w > MaxWeight:
			return nil, fmt.Errorf("queue %.64q: a weight is at most %d (a worker shuffles a list as long as the weights' sum before every fetch)", part, MaxWeight)
		case badWeight && weighted:
			return nil, fmt.Errorf("queue %.64q: want NAME=WEIGHT with a weight from 1 to %d, e.g. %s", part, MaxWeight, Default)
		case badWeight:
			return nil, fmt.Errorf("queue %.64q: want NAME, or NAME=WEIGHT with a weight from 1 to %d, e.g. bulk or %s", part, MaxWeight, Default)
		}
		check := CheckServed // the workers' list
		if !weighted {
			check = checkName // a list of queues to act on, a raw producer's other too
		}
		if err := check(name); err != nil {
			return nil, err
		}
		if _, dup := qs[name]; dup {
			return nil, fmt.Errorf("queue %q listed twice", name)
		}
		qs[name] = w
	}
	return qs, nil
}

// Names returns the names of weights, sorted.
func Names(weights map[string]int) []string {
	return slices.Sorted(maps.Keys(weights))
}

// DefaultNames returns the names of Default, sorted.
func DefaultNames() []string {
	qs, _ := Parse(Default) // a constant that parses: TestParse holds it to that
	return Names(qs)
}
