package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/certmail/certmail/tasks"
)

func ExampleNewSetEmailsTask() {
	task, err := tasks.NewSetEmailsTask(tasks.SetEmails{
		OrderID: 123,
		AdditionalEmails: []string{
			" Jill.Valentine@Example.com",
			"jill.valentine@example.com", // a duplicate: dropped
			"leon.kennedy@example.com",
		},
		// Leave Sequence zero in real code: the constructor stamps it. It is
		// fixed here only to keep the output stable.
		Sequence: 1,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(task.Type())
	fmt.Println(string(task.Payload()))
	// Output:
	// set-emails
	// {"order_id":123,"additional_emails":["Jill.Valentine@example.com","leon.kennedy@example.com"],"sequence":1}
}

func ExampleNewResendDCVTask() {
	task, err := tasks.NewResendDCVTask(tasks.ResendDCV{
		OrderID: 123,
		DomainApprovalEmails: []tasks.DomainApprovalEmail{
			{Domain: "example.com", Email: "admin@example.com"},
			{Domain: "sub.example2.com", Email: "hostmaster@example2.com", EmailDomain: "example2.com"},
		},
		Locale:  "en",
		Account: "eu",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	body, err := tasks.ResendDCV{OrderID: 123}.DigiCertBody()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(task.Type())
	fmt.Println(string(task.Payload()))
	fmt.Println(string(body))
	// Output:
	// resend-dcv
	// {"order_id":123,"domain_approval_emails":[{"domain":"example.com","email":"admin@example.com"},{"domain":"sub.example2.com","email":"hostmaster@example2.com","email_domain":"example2.com"}],"locale":"en","account":"eu"}
	// {}
}

func ExampleNewSendCertTask() {
	task, err := tasks.NewSendCertTask(tasks.SendCert{
		CertificateID:            456,
		Emails:                   []string{"jill.valentine@example.com"},
		CertificateCollectFormat: tasks.CollectAttachment,
		CustomMessage:            "Please install this certificate!",
	}, asynq.Queue("critical"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(task.Type())
	fmt.Println(string(task.Payload()))
	// Output:
	// send-cert
	// {"certificate_id":456,"emails":["jill.valentine@example.com"],"certificate_collect_format":"attachment","custom_message":"Please install this certificate!"}
}

func ExampleNewResendDomainDCVTask() {
	task, err := tasks.NewResendDomainDCVTask(tasks.ResendDomainDCV{
		DomainID:   1234,
		NameScope:  "Sub.Example.com",
		Locale:     "en",
		EmailArray: []string{"admin@example.com", "ADMIN@example.com"}, // a duplicate: dropped
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	body, err := tasks.ResendDomainDCV{DomainID: 1234}.DigiCertBody()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(task.Type())
	fmt.Println(string(task.Payload()))
	fmt.Println(string(body))
	// Output:
	// resend-domain-dcv
	// {"domain_id":1234,"name_scope":"sub.example.com","locale":"en","email_array":["admin@example.com"]}
	// {}
}

// A resend-dcv with OnlyIfPending reads the order's validation status first
// and sends nothing once the order is validated; DigiCert never sees the field.
func ExampleResendDCV_onlyIfPending() {
	p := tasks.ResendDCV{OrderID: 123, Locale: "en", OnlyIfPending: true}
	task, err := tasks.NewResendDCVTask(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, err := p.DigiCertBody()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(task.Payload()))
	fmt.Println(string(body))
	// Output:
	// {"order_id":123,"locale":"en","only_if_pending":true}
	// {"locale":"en"}
}

func ExampleParse() {
	body := []byte(`{"order_id": 0, "additional_emails": ["jill@example.com", "Jill <jill@example.com>"], "colour": "red"}`)
	_, err := tasks.Parse(tasks.TypeSetEmails, body)
	var ve *tasks.ValidationError
	if errors.As(err, &ve) {
		for _, fe := range ve.Errors {
			fmt.Printf("%s: %s\n", fe.Field, fe.Message)
		}
	}

	p, err := tasks.Parse(tasks.TypeSetEmails, []byte(`{"order_id": 123, "additional_emails": ["Jill@EXAMPLE.com"]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%+v\n", p)
	// Output:
	// order_id: must be greater than 0
	// colour: unknown field
	// additional_emails[1]: not a bare email address
	// {OrderID:123 AdditionalEmails:[Jill@example.com] Account: Sequence:0}
}

// A queue name no certmail worker could serve is refused when the task is
// built, rather than waiting in Redis forever.
func ExampleNewTask_invalidQueue() {
	_, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 123}, asynq.Queue("Bulk"))
	fmt.Println(errors.Is(err, tasks.ErrInvalidQueue))
	fmt.Println(err)
	fmt.Println(tasks.ValidQueueName("bulk"), tasks.ValidQueueName("Bulk"))
	// Output:
	// true
	// new task: invalid queue name: asynq.Queue "Bulk": a queue name is 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit
	// true false
}

// A task id the dashboard could not put in the address of a single-task
// action (a slash, '?', '#', '%', a backslash, a control character, a space
// at its start or end, "." or "..") is refused when the task is built; an id
// of the service's own, with a colon or dots within, is fine.
func ExampleNewTask_invalidTaskID() {
	_, err := tasks.NewResendDCVTask(tasks.ResendDCV{OrderID: 123}, asynq.TaskID("crm/7781"))
	fmt.Println(errors.Is(err, tasks.ErrInvalidTaskID))
	fmt.Println(err)
	fmt.Println(tasks.ValidTaskID("crm:7781.2"), tasks.ValidTaskID("crm/7781"))
	// Output:
	// true
	// new task: invalid task id: asynq.TaskID "crm/7781": a task id may not hold / \ ? # % or a control character, nor begin or end with a space, nor be "." or ".."
	// true false
}

// Another Go service enqueues a set-emails task with its own asynq client.
// The queue goes to the constructor, which checks its name.
// (Compiled but not run: it needs a Redis server.)
func Example_enqueue() {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: "127.0.0.1:6379"})
	defer client.Close()

	task, err := tasks.NewSetEmailsTask(tasks.SetEmails{
		OrderID:          123,
		AdditionalEmails: []string{"jill.valentine@example.com"},
	}, asynq.Queue("critical"))
	if err != nil {
		// A *tasks.ValidationError listing every problem, or an error
		// wrapping tasks.ErrInvalidQueue, tasks.ErrTaskIDTooLong,
		// tasks.ErrInvalidTaskID or
		// tasks.ErrTimeoutTooShort.
		fmt.Println("build task:", err)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.EnqueueContext(ctx, task)
	if err != nil {
		fmt.Println("enqueue:", err)
		return
	}
	fmt.Println("enqueued", info.ID, "in queue", info.Queue)
}

// A service that has only a type name and JSON builds the task with asynq
// itself. DefaultOptions give it the constructors' queue, retries, timeout
// and, above all, result retention: asynq's default keeps no result, so a
// completed task would be deleted at once, its outcome unreadable. The
// worker validates the payload and dead-letters it if invalid.
// (Compiled but not run: it needs a Redis server.)
func Example_enqueueRaw() {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: "127.0.0.1:6379"})
	defer client.Close()

	payload := []byte(`{"order_id":123,"locale":"en"}`)
	task := asynq.NewTask(tasks.TypeResendDCV, payload, tasks.DefaultOptions()...)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.EnqueueContext(ctx, task)
	if err != nil {
		fmt.Println("enqueue:", err)
		return
	}
	fmt.Println("enqueued", info.ID, "result kept for", info.Retention)
}
