"""Task groups and the reads and changes that span tasks: getTaskGroup and listTaskGroup with
pagination, one schedulerId per group, sealing and cancelling a group, listDependentTasks,
changeTaskPriority and changeTaskGroupPriority, and the batch `tasks` and `statuses` reads."""

import datetime

import taskcluster

from conftest import claim, failure, new_task_id, task_definition, walk, limited_queue




def plus_an_hour(date):
    """A date in Taskcluster's JSON form, an hour later."""
    when = datetime.datetime.strptime(date, "%Y-%m-%dT%H:%M:%S.%fZ") + datetime.timedelta(hours=1)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def create_in_group(queue, task_queue_id, group_id, **overrides):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, taskGroupId=group_id, **overrides))
    return task_id


def test_get_and_list_a_task_group(queue, task_queue_id):
    group_id = new_task_id()
    members = [create_in_group(queue, task_queue_id, group_id) for _ in range(2)]
    # The member that expires last, though not the last one created.
    last_expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400)
    members.append(create_in_group(queue, task_queue_id, group_id,
                                   expires=taskcluster.stringDate(last_expires)))
    members += [create_in_group(queue, task_queue_id, group_id) for _ in range(2)]

    group = queue.getTaskGroup(group_id)
    assert set(group) == {"taskGroupId", "schedulerId", "expires"}
    assert (group["taskGroupId"], group["schedulerId"]) == (group_id, "-")
    # The group outlives its members by an hour.
    assert group["expires"] == plus_an_hour(queue.task(members[2])["expires"])

    listed = queue.listTaskGroup(group_id)
    assert "continuationToken" not in listed
    assert (listed["taskGroupId"], listed["schedulerId"], listed["expires"]) == \
        (group_id, "-", group["expires"])
    assert "sealed" not in listed
    assert sorted(entry["status"]["taskId"] for entry in listed["tasks"]) == sorted(members)
    for entry in listed["tasks"]:
        task_id = entry["status"]["taskId"]
        assert entry["task"] == queue.task(task_id)
        assert entry["status"] == queue.status(task_id)["status"]

    pages = walk(queue.listTaskGroup, group_id, limit=2)
    assert all(len(page["tasks"]) <= 2 for page in pages)
    walked = [entry["status"]["taskId"] for page in pages for entry in page["tasks"]]
    assert sorted(walked) == sorted(members)

    unknown = new_task_id()
    for call in (queue.getTaskGroup, queue.listTaskGroup):
        error = failure(call, unknown)
        assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")


def test_a_group_has_one_scheduler_id(queue, task_queue_id):
    group_id = new_task_id()
    first = create_in_group(queue, task_queue_id, group_id, schedulerId="sched-a")
    task_id = new_task_id()
    error = failure(queue.createTask, task_id,
                    task_definition(task_queue_id, taskGroupId=group_id, schedulerId="sched-b"))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")
    assert failure(queue.status, task_id).status_code == 404
    assert queue.getTaskGroup(group_id)["schedulerId"] == "sched-a"
    assert [e["status"]["taskId"] for e in queue.listTaskGroup(group_id)["tasks"]] == [first]


def test_seal_a_task_group(queue, task_queue_id):
    group_id = new_task_id()
    create_in_group(queue, task_queue_id, group_id)
    sealed = queue.sealTaskGroup(group_id)
    assert set(sealed) == {"taskGroupId", "schedulerId", "expires", "sealed"}
    assert (sealed["taskGroupId"], sealed["schedulerId"]) == (group_id, "-")
    assert sealed["sealed"].endswith("Z")
    assert queue.sealTaskGroup(group_id) == sealed
    assert queue.getTaskGroup(group_id) == sealed
    assert queue.listTaskGroup(group_id)["sealed"] == sealed["sealed"]

    task_id = new_task_id()
    error = failure(queue.createTask, task_id, task_definition(task_queue_id, taskGroupId=group_id))
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")
    assert failure(queue.status, task_id).status_code == 404
    assert len(queue.listTaskGroup(group_id)["tasks"]) == 1

    assert failure(queue.sealTaskGroup, new_task_id()).status_code == 404


def test_sealing_and_cancelling_need_scopes_for_the_groups_scheduler(server, queue,
                                                                      task_queue_id):
    group_id = new_task_id()
    task_id = create_in_group(queue, task_queue_id, group_id, schedulerId="sched-s")
    other = limited_queue(server, [f"queue:seal-task-group:-/{group_id}",
                                   f"queue:cancel-task-group:-/{group_id}"])
    error = failure(other.sealTaskGroup, group_id)
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert "sealed" not in queue.getTaskGroup(group_id)
    allowed = limited_queue(server, [f"queue:seal-task-group:sched-s/{group_id}",
                                     f"queue:cancel-task-group:sched-s/{group_id}"])
    assert "sealed" in allowed.sealTaskGroup(group_id)
    error = failure(other.cancelTaskGroup, group_id)
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert queue.status(task_id)["status"]["state"] == "pending"
    assert allowed.cancelTaskGroup(group_id)["taskIds"] == [task_id]


def test_cancel_a_sealed_task_group(queue, task_queue_id):
    group_id = new_task_id()
    # One pending task at a time, so each claim takes the task just made.
    completed = create_in_group(queue, task_queue_id, group_id)
    claim(queue, task_queue_id)
    queue.reportCompleted(completed, "0")
    failed = create_in_group(queue, task_queue_id, group_id)
    claim(queue, task_queue_id)
    queue.reportFailed(failed, "0")
    running = create_in_group(queue, task_queue_id, group_id)
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == running
    pending = create_in_group(queue, task_queue_id, group_id)
    unscheduled = create_in_group(queue, task_queue_id, group_id, dependencies=[pending])
    before = {task_id: queue.status(task_id)["status"] for task_id in (completed, failed)}

    error = failure(queue.cancelTaskGroup, group_id)
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")
    assert queue.status(pending)["status"]["state"] == "pending"

    queue.sealTaskGroup(group_id)
    reply = queue.cancelTaskGroup(group_id)
    assert set(reply) == {"taskGroupId", "taskGroupSize", "cancelledCount", "taskIds"}
    assert (reply["taskGroupId"], reply["taskGroupSize"], reply["cancelledCount"]) == \
        (group_id, 5, 3)
    assert sorted(reply["taskIds"]) == sorted([running, pending, unscheduled])

    for task_id in (running, pending, unscheduled):
        status = queue.status(task_id)["status"]
        assert status["state"] == "exception"
        assert status["runs"][-1]["reasonResolved"] == "canceled"
    assert queue.status(unscheduled)["status"]["runs"][0]["reasonCreated"] == "exception"
    for task_id, status in before.items():
        assert queue.status(task_id)["status"] == status
    # The worker of the canceled run learns of it when it reclaims.
    assert failure(queue.reclaimTask, running, "0").status_code == 409

    again = queue.cancelTaskGroup(group_id)
    assert (again["taskGroupSize"], again["cancelledCount"], again["taskIds"]) == (5, 0, [])
    assert failure(queue.cancelTaskGroup, new_task_id()).status_code == 404


def test_list_dependent_tasks(queue, task_queue_id):
    dependency = new_task_id()
    queue.createTask(dependency, task_definition(task_queue_id))
    other = new_task_id()
    queue.createTask(other, task_definition(task_queue_id))
    dependents = []
    for deps in ([dependency], [dependency, other], [other, dependency], [dependency],
                 [dependency]):
        task_id = new_task_id()
        queue.createTask(task_id, task_definition(task_queue_id, dependencies=deps))
        dependents.append(task_id)
    queue.createTask(new_task_id(), task_definition(task_queue_id, dependencies=[other]))

    listed = queue.listDependentTasks(dependency)
    assert listed["taskId"] == dependency
    assert "continuationToken" not in listed
    assert sorted(entry["status"]["taskId"] for entry in listed["tasks"]) == sorted(dependents)
    for entry in listed["tasks"]:
        task_id = entry["status"]["taskId"]
        assert entry["task"] == queue.task(task_id)
        assert entry["status"]["state"] == "unscheduled"

    pages = walk(queue.listDependentTasks, dependency, limit=2)
    assert all(len(page["tasks"]) <= 2 for page in pages)
    walked = [entry["status"]["taskId"] for page in pages for entry in page["tasks"]]
    assert sorted(walked) == sorted(dependents)

    assert queue.listDependentTasks(dependents[0])["tasks"] == []
    error = failure(queue.listDependentTasks, new_task_id())
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")


def test_change_task_priority(server, queue, task_queue_id):
    low = new_task_id()
    queue.createTask(low, task_definition(task_queue_id, priority="lowest"))
    medium = new_task_id()
    queue.createTask(medium, task_definition(task_queue_id, priority="medium"))

    status = queue.changeTaskPriority(low, {"newPriority": "highest"})["status"]
    assert (status["taskId"], status["priority"], status["state"]) == (low, "highest", "pending")
    assert queue.status(low)["status"]["priority"] == "highest"
    assert queue.task(low)["priority"] == "highest"
    # The pending queue follows: the raised task is claimed first.
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == low
    queue.reportCompleted(low, "0")
    error = failure(queue.changeTaskPriority, low, {"newPriority": "low"})
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")

    error = failure(queue.changeTaskPriority, medium, {"newPriority": "normal"})
    assert (error.status_code, error.body["code"]) == (400, "InputValidationError")
    error = failure(queue.changeTaskPriority, new_task_id(), {"newPriority": "low"})
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")

    # Either of two scopes will do; other scopes will not.
    unrelated = limited_queue(server, [f"queue:change-task-priority:{low}"])
    error = failure(unrelated.changeTaskPriority, medium, {"newPriority": "high"})
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    by_task = limited_queue(server, [f"queue:change-task-priority:{medium}"])
    assert by_task.changeTaskPriority(medium, {"newPriority": "high"})["status"]["priority"] == \
        "high"
    by_queue = limited_queue(server, [f"queue:change-task-priority-in-queue:{task_queue_id}"])
    assert by_queue.changeTaskPriority(medium, {"newPriority": "low"})["status"]["priority"] == \
        "low"
    assert queue.status(medium)["status"]["priority"] == "low"


def test_change_task_group_priority(server, queue, task_queue_id):
    group_id = new_task_id()
    # One pending task at a time while claiming, so each claim takes the task just made.
    done = create_in_group(queue, task_queue_id, group_id, schedulerId="sched-p")
    claim(queue, task_queue_id)
    queue.reportCompleted(done, "0")
    running = create_in_group(queue, task_queue_id, group_id, schedulerId="sched-p")
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == running
    outside = new_task_id()
    queue.createTask(outside, task_definition(task_queue_id, priority="medium"))
    pending = create_in_group(queue, task_queue_id, group_id, schedulerId="sched-p")
    already = create_in_group(queue, task_queue_id, group_id, schedulerId="sched-p",
                              priority="high")
    unscheduled = create_in_group(queue, task_queue_id, group_id, schedulerId="sched-p",
                                  dependencies=[pending])

    reply = queue.changeTaskGroupPriority(group_id, {"newPriority": "high"})
    assert set(reply) == {"taskGroupId", "schedulerId", "newPriority", "tasksAffected", "taskIds"}
    assert (reply["taskGroupId"], reply["schedulerId"], reply["newPriority"]) == \
        (group_id, "sched-p", "high")
    assert reply["tasksAffected"] == 3
    assert sorted(reply["taskIds"]) == sorted([running, pending, unscheduled])
    for task_id in (running, pending, unscheduled, already):
        assert queue.status(task_id)["status"]["priority"] == "high"
    assert queue.status(done)["status"]["priority"] == "lowest"
    assert queue.status(outside)["status"]["priority"] == "medium"
    assert queue.status(running)["status"]["state"] == "running"
    # The pending queue follows: the group's pending tasks now come before the medium one.
    assert {task["status"]["taskId"] for task in claim(queue, task_queue_id, tasks=2)} == \
        {pending, already}
    assert [task["status"]["taskId"] for task in claim(queue, task_queue_id)] == [outside]

    again = queue.changeTaskGroupPriority(group_id, {"newPriority": "high"})
    assert (again["tasksAffected"], again["taskIds"]) == (0, [])

    error = failure(queue.changeTaskGroupPriority, group_id, {"newPriority": "normal"})
    assert (error.status_code, error.body["code"]) == (400, "InputValidationError")
    error = failure(queue.changeTaskGroupPriority, new_task_id(), {"newPriority": "low"})
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")
    # The scope names the group's scheduler.
    other = limited_queue(server, [f"queue:change-task-group-priority:-/{group_id}"])
    error = failure(other.changeTaskGroupPriority, group_id, {"newPriority": "low"})
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert queue.status(unscheduled)["status"]["priority"] == "high"
    allowed = limited_queue(server, [f"queue:change-task-group-priority:sched-p/{group_id}"])
    lowered = allowed.changeTaskGroupPriority(group_id, {"newPriority": "low"})
    # The claimed tasks are running now; the completed one keeps its priority.
    assert sorted(lowered["taskIds"]) == sorted([running, pending, already, unscheduled])
    assert queue.status(unscheduled)["status"]["priority"] == "low"


def test_batch_tasks_and_statuses(queue, task_queue_id):
    known = [new_task_id() for _ in range(3)]
    for task_id in known:
        queue.createTask(task_id, task_definition(task_queue_id))
    unknown = new_task_id()
    request = {"taskIds": [known[0], unknown, known[1], known[2]]}

    tasks = queue.tasks(request)
    assert sorted(entry["taskId"] for entry in tasks["tasks"]) == sorted(known)
    for entry in tasks["tasks"]:
        assert set(entry) == {"taskId", "task"}
        assert entry["task"] == queue.task(entry["taskId"])

    statuses = queue.statuses(request)
    assert sorted(entry["taskId"] for entry in statuses["statuses"]) == sorted(known)
    for entry in statuses["statuses"]:
        assert set(entry) == {"taskId", "status"}
        assert entry["status"] == queue.status(entry["taskId"])["status"]

    assert queue.tasks({"taskIds": [unknown]})["tasks"] == []
    assert queue.statuses({"taskIds": [unknown]})["statuses"] == []


def test_list_recent_task_groups(server, queue, task_queue_id):
    """Taskfold's `GET /task-groups` (the console's home page): the groups with unresolved
    tasks, most unresolved first, then the ones resolved lately, latest first; public, like
    listTaskGroup; a bad limit is a 400."""
    import requests

    busy, quiet, done = new_task_id(), new_task_id(), new_task_id()
    for _ in range(3):
        create_in_group(queue, task_queue_id, busy)
    create_in_group(queue, task_queue_id, quiet)
    # The resolved group's task is alone in a queue of its own, so it is the one claimed.
    own_queue = task_queue_id + "-done"
    only = create_in_group(queue, own_queue, done)
    [claimed] = claim(queue, own_queue)
    assert claimed["status"]["taskId"] == only
    queue.reportCompleted(only, "0")

    url = f"{server.root_url}/api/queue/v1/task-groups"
    # Anonymous, like listTaskGroup.
    answer = requests.get(url, params={"limit": "200"}, timeout=10)
    assert answer.status_code == 200, answer.text
    groups = {group["taskGroupId"]: group for group in answer.json()["taskGroups"]}
    assert groups[busy]["unresolvedTasks"] == 3 and "resolved" not in groups[busy]
    assert groups[quiet]["unresolvedTasks"] == 1
    assert groups[done]["unresolvedTasks"] == 0 and groups[done]["resolved"]
    assert groups[done]["schedulerId"] == "-" and groups[done]["expires"]
    order = [group["taskGroupId"] for group in answer.json()["taskGroups"]]
    assert order.index(busy) < order.index(quiet) < order.index(done)

    answer = requests.get(url, params={"limit": "x"}, timeout=10)
    assert (answer.status_code, answer.json()["code"]) == (400, "InvalidRequestArguments")
