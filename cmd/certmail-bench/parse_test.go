package main

import (
	"slices"
	"testing"
	"time"
)

func TestTaskCheckIntervalFromHelp(t *testing.T) {
	const with = `Flags:
      --concurrency=20            Deliveries handled at once by this process
                                  ($CERTMAIL_CONCURRENCY).
      --task-check-interval=100ms
                                  How often an idle worker asks Redis for a
                                  task ($CERTMAIL_TASK_CHECK_INTERVAL).
      --pprof                     Serve profiles ($CERTMAIL_PPROF).
`
	d, ok, err := taskCheckIntervalFromHelp(with)
	if err != nil || !ok || d != 100*time.Millisecond {
		t.Errorf("with the setting: %v, %v, %v; want 100ms, true, nil", d, ok, err)
	}
	d, ok, err = taskCheckIntervalFromHelp("      --concurrency=20   ($CERTMAIL_CONCURRENCY).\n")
	if err != nil || ok || d != 0 {
		t.Errorf("without the setting: %v, %v, %v; want 0, false, nil", d, ok, err)
	}
	if _, _, err := taskCheckIntervalFromHelp("      --interval=soon ($CERTMAIL_TASK_CHECK_INTERVAL)"); err == nil {
		t.Error("an unreadable default was accepted")
	}
}

func TestMonitorTallies(t *testing.T) {
	m := &monitor{ignore: "127.0.0.1:7000", labels: map[string]int{}, scriptLabels: map[string]int{}}
	for _, line := range []string{
		`+1700000000.000001 [0 127.0.0.1:6001] "evalsha" "abc" "2" "asynq:{default}:pending" "asynq:{default}:paused"` + "\r\n",
		`+1700000000.000002 [0 lua] "zadd" "certmail:ratelimit:{default}:5s" "1" "x"` + "\r\n",
		`+1700000000.000003 [0 127.0.0.1:7000] "info" "stats"` + "\r\n",
		`+1700000000.000004 [0 127.0.0.1:6002] "set" "certmail:delivered:0b5ee2c1-6d0e-4f3a-9a57-2a0c8a7f4e11" "a \"quoted\" value"` + "\r\n",
		`+1700000000.000005 [0 127.0.0.1:6002] "hset" "asynq:{default}:t:42" "result" "\x00\x01"` + "\r\n",
	} {
		m.add(line)
	}
	labels, total, scripts, scriptTotal := m.counts()
	if total != 3 {
		t.Errorf("counted %v commands, want 3 (Lua's and the ignored client's left out)", total)
	}
	if scriptTotal != 1 || scripts["zadd"] != 1 {
		t.Errorf("counted %v commands run by scripts, %v; want one zadd", scriptTotal, scripts)
	}
	var got []string
	for l := range labels {
		got = append(got, l)
	}
	slices.Sort(got)
	want := []string{"evalsha asynq:{default}:pending", "hset asynq:{default}:t:N", "set certmail:delivered:<id>"}
	if !slices.Equal(got, want) {
		t.Errorf("labels %q, want %q", got, want)
	}
}
