"""Workers on more than one process, GPU or machine (`chisel serve --ray`): the head's scheduler leases prompts from
the SQLite queue to worker processes (Ray actors) that each run the same executor with their own output cache and
model memory.

    refs.py         the files a prompt names (model files for affinity, input images to send)
    policy.py       which prompt an idle worker takes (model affinity, bounded waiting, no starvation)
    scheduler.py    the head's PromptRunner: leases, events back to the hub, retries, interrupt (no Ray)
    outputs.py      output files from workers into the head's folders, ui items renamed
    core.py         one worker: compose() + executor + an event outbox the head polls (no Ray)
    inprocess.py    a WorkerLink to a WorkerCore in this process (tests)
    actor.py        the Ray actor around a WorkerCore
    ray_cluster.py  the Ray runtime, actors per node, RayLink (the only module that imports Ray)
    node.py         `chisel worker`: a Ray node that joins the cluster with this machine's folders
    spec.py         a worker's ServerConfig as JSON

Ray is imported only by ray_cluster.py, and only when a server or worker runs with --ray.
"""
