package schedule

import (
	"regexp"
	"strings"
)

// sundaySeven is a 7 in a cron spec's day-of-week field, alone or at an
// end of a range or list ("7", "5-7", "1,7"), not a step ("*/7").
var sundaySeven = regexp.MustCompile(`(^|[,-])7($|[,/-])`)

// cronParseProblem is what is said of a cron spec the parser refused with
// err. Vixie cron takes 7 for Sunday in the day-of-week field; here days of
// the week are 0-6, and one 7 is refused saying to write 0, rather than
// with the parser's "above maximum (6)".
func cronParseProblem(spec string, err error) string {
	if fields := strings.Fields(spec); len(fields) == 5 && sundaySeven.MatchString(fields[4]) {
		return "day of week 7: write 0 for Sunday (days of the week are 0-6, or SUN-SAT)"
	}
	return "not a 5-field cron spec or a descriptor such as @every 1h: " + err.Error()
}
