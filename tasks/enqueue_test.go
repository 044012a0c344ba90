package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/internal/redistest"
	"github.com/certmail/certmail/tasks"
)

// TestEnqueueOptions enqueues into a real Redis and reads back what asynq
// stored: the defaults NewTask prepends, and the caller's options (given to
// the constructor or at enqueue time) winning over them.
func TestEnqueueOptions(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := asynq.NewClient(srv.ConnOpt())
	t.Cleanup(func() { _ = client.Close() })

	p := tasks.SetEmails{OrderID: 123, AdditionalEmails: []string{"jill@example.com"}}
	tests := []struct {
		name          string
		taskOpts      []asynq.Option
		enqueueOpts   []asynq.Option
		wantQueue     string
		wantMaxRetry  int
		wantTimeout   time.Duration
		wantRetention time.Duration
	}{
		{"defaults", nil, nil, "default", 12, 2 * time.Minute, 24 * time.Hour},
		{"constructor options win", []asynq.Option{asynq.Queue("critical"), asynq.MaxRetry(3)}, nil, "critical", 3, 2 * time.Minute, 24 * time.Hour},
		{"enqueue options win", []asynq.Option{asynq.Queue("critical")}, []asynq.Option{asynq.Queue("bulk"), asynq.Timeout(time.Minute), asynq.Retention(time.Hour)},
			"bulk", 12, time.Minute, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tasks.NewSetEmailsTask(p, tt.taskOpts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			info, err := client.EnqueueContext(ctx, task, tt.enqueueOpts...)
			if err != nil {
				t.Fatal(err)
			}
			if info.Type != tasks.TypeSetEmails || string(info.Payload) != string(task.Payload()) {
				t.Errorf("stored %s %s, want %s %s", info.Type, info.Payload, tasks.TypeSetEmails, task.Payload())
			}
			if info.Queue != tt.wantQueue || info.MaxRetry != tt.wantMaxRetry || info.Timeout != tt.wantTimeout || info.Retention != tt.wantRetention {
				t.Errorf("stored queue %q, max retry %d, timeout %v, retention %v; want %q, %d, %v, %v",
					info.Queue, info.MaxRetry, info.Timeout, info.Retention,
					tt.wantQueue, tt.wantMaxRetry, tt.wantTimeout, tt.wantRetention)
			}
		})
	}
}
