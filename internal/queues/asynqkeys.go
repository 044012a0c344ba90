package queues

// AsynqKey is the Redis key of one of asynq's records of queue, in asynq
// v0.26's layout (its internal/base): "asynq:{<queue>}:<suffix>", such as
// "pending" (a list), "archived" and "retry" (sorted sets of task ids: when
// the task was archived, when it is retried). certmail reads and writes a
// few of asynq's keys itself: in its own scripts (a task's result, written
// in the round trip after a DigiCert call; the unparker's move from the
// archive to the retry set), and in reads asynq's Inspector cannot make
// within a deadline or in one round trip (the queue figures, the
// dashboard's count before an "Archive all", a task asynq trimmed from its
// archive). Tests compare what certmail reads so with asynq's Inspector,
// so an asynq upgrade that changes the layout fails them.
func AsynqKey(queue, suffix string) string { return "asynq:{" + queue + "}:" + suffix }

// AsynqTaskKey is the hash in which asynq keeps a task of queue and its
// result (field "result", what asynq's ResultWriter writes).
func AsynqTaskKey(queue, id string) string { return AsynqKey(queue, "t:"+id) }

// AsynqQueuesKey is the set of every queue asynq has known, in the same
// layout as AsynqKey's: a queue is added when a task is first enqueued
// into it, and stays until it is deleted from the dashboard or the
// inspector.
const AsynqQueuesKey = "asynq:queues"
