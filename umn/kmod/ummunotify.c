// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: userspace notification of memory-map changes for registered
 * address ranges, for RDMA registration caches.
 *
 * The userspace ABI is the one of the ummunotify proposal (R. Dreier,
 * 2009-2010), see ../include/ummunotify.h; this file is a new
 * implementation for current kernels (6.x).
 *
 * The journey of an event
 * -----------------------
 * open() binds the file to the opener's mm with one mmu_notifier. Every
 * invalidation of that mm (munmap, mremap, madvise, MAP_FIXED, brk, page
 * reclaim, migration, ...) calls umn_invalidate_range_start() *before* the
 * pages go. It looks the range up in the file's interval tree of
 * registrations (O(log n + k) for k hits), and for each hit:
 *   - bumps the registration's word, if UMMUNOTIFY_FEATURE_REGION_WORDS;
 *   - queues the registration itself on the event list (the list node is
 *     embedded, so the callback never allocates and the queue can never
 *     hold more than one entry per registration: bounded memory, nothing
 *     lost when "full"); already queued means "hit twice before read":
 *     the HINT flag is dropped, as the proposal specifies, unless the new
 *     hit lies inside the pending hint (then the event is unchanged);
 * then, if the queue changed, bumps the generation counter at the start
 * of the mmap'd page once, and wakes readers, pollers and SIGIO owners.
 *
 * Locking
 * -------
 * One spinlock per file (f->lock) protects the interval tree, the cookie
 * rbtree, the event list, the slot bitmap and the counter. It is taken in
 * the invalidate callback, which may run in non-blocking context (OOM
 * reaper) and under reclaim (lockdep's
 * __mmu_notifier_invalidate_range_start_map): so nothing ever allocates,
 * sleeps or faults while holding it. register allocates before taking it;
 * read() copies to userspace with page faults disabled, and on a fault
 * drops the lock, faults the buffer in, and retries.
 * f->setup (a mutex) orders EXCHANGE_FEATURES against mmap(): mmap() runs
 * under mmap_lock and takes f->setup; EXCHANGE_FEATURES takes f->setup
 * and never mmap_lock.
 *
 * Lifetime
 * --------
 * The file holds the mm_struct (mmgrab by mmu_notifier_register), never
 * the address space. When the process exits, exit_mmap() detaches the
 * notifier; the last fput() then runs umn_release(), which unregisters
 * the notifier (waiting for callbacks in flight: SRCU) and frees every
 * registration. A mapping of the counter page holds the file, so the
 * page outlives every user mapping. The misc device's fops hold a module
 * reference per open file: rmmod is refused while a file is open.
 *
 * fork(): the child inherits the descriptor and the counter mapping; they
 * keep reporting the *parent's* mm (the mm the file was opened in). The
 * child's own memory changes are never reported; REGISTER/UNREGISTER from
 * any other mm fail with -EPERM. A fork child that wants events opens its
 * own file.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitmap.h>
#include <linux/fs.h>
#include <linux/interval_tree.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pagemap.h>
#include <linux/poll.h>
#include <linux/rbtree.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>

#include "ummunotify.h"

#define UMN_SUPPORTED_FEATURES	UMMUNOTIFY_FEATURE_REGION_WORDS
/* Hard ceiling for the max_regions parameter: 2^24 registrations. */
#define UMN_MAX_REGIONS_CEIL	(1U << 24)

static unsigned int max_regions = 65536;
module_param(max_regions, uint, 0644);
MODULE_PARM_DESC(max_regions,
		 "Registrations per open file (read at open; REGISTER fails with ENOSPC beyond it)");

static bool report_protection;
module_param(report_protection, bool, 0644);
MODULE_PARM_DESC(report_protection,
		 "Also report mprotect/COW-protect/soft-dirty invalidations (default: no, they keep the pages)");

struct umn_reg {
	struct interval_tree_node it;	/* [start, end - 1] */
	struct rb_node by_cookie;
	struct list_head event;		/* on f->events while queued */
	u64 cookie;
	u64 hint_start, hint_end;	/* exclusive end */
	u32 flags;			/* UMMUNOTIFY_EVENT_FLAG_* when queued */
	u32 slot;			/* region word index, 0 = none */
	bool queued;
};

struct umn_file {
	struct mmu_notifier mn;
	struct mm_struct *mm;		/* the opener's; pointer compare only */

	spinlock_t lock;		/* see "Locking" */
	struct rb_root_cached itree;
	struct rb_root cookies;
	struct list_head events;
	u32 nregs;
	bool need_last;			/* a read drained the queue but had no room for LAST */

	wait_queue_head_t wq;
	struct fasync_struct *fasync;

	struct mutex setup;		/* features, area, mapped */
	u32 features;
	u32 max_regs;
	u64 *area;			/* vmalloc_user: counter, then region words */
	size_t area_len;
	unsigned long *slots;		/* region word bitmap, with the feature */
	bool mapped;
};

static inline u32 umn_first_word(void)
{
	return PAGE_SIZE / sizeof(u64);
}

static bool umn_event_reported(const struct mmu_notifier_range *range)
{
	switch (range->event) {
	case MMU_NOTIFY_PROTECTION_VMA:
	case MMU_NOTIFY_PROTECTION_PAGE:
	case MMU_NOTIFY_SOFT_DIRTY:
		/* The pages (and a NIC's view of them) stay. */
		return READ_ONCE(report_protection);
	default:
		return true;
	}
}

static int umn_invalidate_range_start(struct mmu_notifier *mn,
				      const struct mmu_notifier_range *range)
{
	struct umn_file *f = container_of(mn, struct umn_file, mn);
	struct interval_tree_node *node;
	bool changed = false;

	if (!umn_event_reported(range))
		return 0;

	spin_lock(&f->lock);
	for (node = interval_tree_iter_first(&f->itree, range->start, range->end - 1);
	     node; node = interval_tree_iter_next(node, range->start, range->end - 1)) {
		struct umn_reg *r = container_of(node, struct umn_reg, it);
		u64 s = max_t(u64, range->start, node->start);
		u64 e = min_t(u64, range->end, node->last + 1);

		if (r->slot)
			WRITE_ONCE(f->area[r->slot], f->area[r->slot] + 1);
		if (r->queued) {
			/*
			 * Hit again before read: still one event. Inside the
			 * pending hint (mremap's move invalidates the old range
			 * twice) the event is unchanged; elsewhere it loses the
			 * hint, as the proposal specifies. Only a change to
			 * what a read would return bumps the counter.
			 */
			if (!(r->flags & UMMUNOTIFY_EVENT_FLAG_HINT) ||
			    (s >= r->hint_start && e <= r->hint_end))
				continue;
			r->flags &= ~UMMUNOTIFY_EVENT_FLAG_HINT;
			changed = true;
			continue;
		}
		r->queued = true;
		r->flags = UMMUNOTIFY_EVENT_FLAG_HINT;
		r->hint_start = s;
		r->hint_end = e;
		list_add_tail(&r->event, &f->events);
		changed = true;
	}
	if (changed) {
		/*
		 * Userspace loads the counter without the lock; a plain
		 * aligned 64-bit store is single-copy atomic. The store is
		 * made before munmap() can return, so a cache that sees the
		 * old counter after munmap() returned cannot exist.
		 */
		WRITE_ONCE(f->area[0], f->area[0] + 1);
	}
	spin_unlock(&f->lock);

	if (changed) {
		wake_up_interruptible(&f->wq);
		kill_fasync(&f->fasync, SIGIO, POLL_IN);
	}
	return 0;
}

static const struct mmu_notifier_ops umn_mn_ops = {
	.invalidate_range_start = umn_invalidate_range_start,
};

static struct umn_reg *umn_find_cookie(struct umn_file *f, u64 cookie)
{
	struct rb_node *n = f->cookies.rb_node;

	while (n) {
		struct umn_reg *r = rb_entry(n, struct umn_reg, by_cookie);

		if (cookie < r->cookie)
			n = n->rb_left;
		else if (cookie > r->cookie)
			n = n->rb_right;
		else
			return r;
	}
	return NULL;
}

/* Insert into the cookie tree; false if the cookie is taken. */
static bool umn_insert_cookie(struct umn_file *f, struct umn_reg *new)
{
	struct rb_node **p = &f->cookies.rb_node, *parent = NULL;

	while (*p) {
		struct umn_reg *r = rb_entry(*p, struct umn_reg, by_cookie);

		parent = *p;
		if (new->cookie < r->cookie)
			p = &(*p)->rb_left;
		else if (new->cookie > r->cookie)
			p = &(*p)->rb_right;
		else
			return false;
	}
	rb_link_node(&new->by_cookie, parent, p);
	rb_insert_color(&new->by_cookie, &f->cookies);
	return true;
}

/* Unlink from every structure; f->lock held. */
static void umn_unlink(struct umn_file *f, struct umn_reg *r)
{
	interval_tree_remove(&r->it, &f->itree);
	rb_erase(&r->by_cookie, &f->cookies);
	if (r->queued)
		list_del(&r->event);
	if (r->slot)
		__clear_bit(r->slot - umn_first_word(), f->slots);
	f->nregs--;
}

static int umn_open(struct inode *inode, struct file *file)
{
	struct umn_file *f;
	int ret;

	if (!current->mm)
		return -EINVAL;
	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f)
		return -ENOMEM;
	spin_lock_init(&f->lock);
	f->itree = RB_ROOT_CACHED;
	f->cookies = RB_ROOT;
	INIT_LIST_HEAD(&f->events);
	init_waitqueue_head(&f->wq);
	mutex_init(&f->setup);
	f->max_regs = clamp_t(u32, READ_ONCE(max_regions), 1, UMN_MAX_REGIONS_CEIL);
	f->area_len = PAGE_SIZE;
	f->area = vmalloc_user(f->area_len);
	if (!f->area) {
		kfree(f);
		return -ENOMEM;
	}
	f->mm = current->mm;
	f->mn.ops = &umn_mn_ops;
	ret = mmu_notifier_register(&f->mn, f->mm);
	if (ret) {
		vfree(f->area);
		kfree(f);
		return ret;
	}
	file->private_data = f;
	return stream_open(inode, file);
}

static int umn_release(struct inode *inode, struct file *file)
{
	struct umn_file *f = file->private_data;
	struct umn_reg *r, *tmp;

	/* After this no callback runs or will run (SRCU); drops the mm. */
	mmu_notifier_unregister(&f->mn, f->mm);
	rbtree_postorder_for_each_entry_safe(r, tmp, &f->cookies, by_cookie)
		kfree(r);
	bitmap_free(f->slots);
	vfree(f->area);
	kfree(f);
	return 0;
}

static long umn_exchange_features(struct umn_file *f, u32 __user *arg)
{
	u32 want, on;
	u64 *area = NULL;
	unsigned long *slots = NULL;
	size_t len = 0;
	long ret = 0;

	if (get_user(want, arg))
		return -EFAULT;
	want &= UMN_SUPPORTED_FEATURES;

	mutex_lock(&f->setup);
	on = want & ~f->features;
	if (on & UMMUNOTIFY_FEATURE_REGION_WORDS) {
		len = PAGE_SIZE + PAGE_ALIGN((size_t)f->max_regs * sizeof(u64));
		area = vmalloc_user(len);
		slots = bitmap_zalloc(f->max_regs, GFP_KERNEL_ACCOUNT);
		if (!area || !slots) {
			ret = -ENOMEM;
			goto out;
		}
	}
	if (on) {
		spin_lock(&f->lock);
		if (f->mapped || f->nregs) {
			spin_unlock(&f->lock);
			ret = -EBUSY;
			goto out;
		}
		if (area) {
			area[0] = f->area[0];
			swap(area, f->area);
			f->area_len = len;
			f->slots = slots;
			slots = NULL;
		}
		f->features |= on;
		spin_unlock(&f->lock);
	}
	if (put_user(f->features, arg))
		ret = -EFAULT;
out:
	mutex_unlock(&f->setup);
	vfree(area);		/* the old area, or the unused new one */
	bitmap_free(slots);
	return ret;
}

static long umn_get_area(struct umn_file *f, struct ummunotify_area __user *arg)
{
	struct ummunotify_area a = {};

	mutex_lock(&f->setup);
	a.length = f->area_len;
	a.max_regions = f->max_regs;
	a.first_word = (f->features & UMMUNOTIFY_FEATURE_REGION_WORDS) ? umn_first_word() : 0;
	mutex_unlock(&f->setup);
	return copy_to_user(arg, &a, sizeof(a)) ? -EFAULT : 0;
}

static long umn_register(struct umn_file *f, struct ummunotify_register_ioctl __user *arg)
{
	struct ummunotify_register_ioctl req;
	struct umn_reg *r;
	long ret = 0;

	if (current->mm != f->mm)
		return -EPERM;
	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.flags || req.reserved || req.start >= req.end)
		return -EINVAL;

	r = kzalloc(sizeof(*r), GFP_KERNEL_ACCOUNT);
	if (!r)
		return -ENOMEM;
	r->it.start = req.start;
	r->it.last = req.end - 1;
	r->cookie = req.user_cookie;
	INIT_LIST_HEAD(&r->event);

	spin_lock(&f->lock);
	if (f->nregs >= f->max_regs) {
		ret = -ENOSPC;
		goto unlock;
	}
	if (!umn_insert_cookie(f, r)) {
		ret = -EEXIST;
		goto unlock;
	}
	if (f->slots) {
		unsigned long i = find_first_zero_bit(f->slots, f->max_regs);

		/* nregs < max_regs, so there is a free slot. */
		__set_bit(i, f->slots);
		r->slot = umn_first_word() + i;
		WRITE_ONCE(f->area[r->slot], 0);
	}
	interval_tree_insert(&r->it, &f->itree);
	f->nregs++;
	spin_unlock(&f->lock);

	if (r->slot && put_user(r->slot, &arg->reserved)) {
		/* The caller cannot learn its word: undo. */
		spin_lock(&f->lock);
		umn_unlink(f, r);
		spin_unlock(&f->lock);
		kfree(r);
		return -EFAULT;
	}
	return 0;

unlock:
	spin_unlock(&f->lock);
	kfree(r);
	return ret;
}

static long umn_unregister(struct umn_file *f, u64 __user *arg)
{
	struct umn_reg *r;
	u64 cookie;

	if (current->mm != f->mm)
		return -EPERM;
	if (get_user(cookie, arg))
		return -EFAULT;
	spin_lock(&f->lock);
	r = umn_find_cookie(f, cookie);
	if (r)
		umn_unlink(f, r);	/* a pending event goes with it */
	spin_unlock(&f->lock);
	if (!r)
		return -ENOENT;
	kfree(r);
	return 0;
}

static long umn_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct umn_file *f = file->private_data;
	void __user *p = (void __user *)arg;

	switch (cmd) {
	case UMMUNOTIFY_EXCHANGE_FEATURES:
		return umn_exchange_features(f, p);
	case UMMUNOTIFY_REGISTER_REGION:
		return umn_register(f, p);
	case UMMUNOTIFY_UNREGISTER_REGION:
		return umn_unregister(f, p);
	case UMMUNOTIFY_GET_AREA:
		return umn_get_area(f, p);
	default:
		return -ENOTTY;
	}
}

static bool umn_readable(struct umn_file *f)
{
	bool r;

	spin_lock(&f->lock);
	r = !list_empty(&f->events) || f->need_last;
	spin_unlock(&f->lock);
	return r;
}

/*
 * Copy queued events, then LAST if the queue drained and there is room.
 * Runs under f->lock with page faults disabled; returns the number of
 * records copied, and *fault when a copy faulted (the record stays queued).
 */
static size_t umn_copy_events(struct umn_file *f, char __user *buf, size_t max, bool *fault)
{
	struct ummunotify_event ev;
	size_t n = 0;

	while (n < max && !list_empty(&f->events)) {
		struct umn_reg *r = list_first_entry(&f->events, struct umn_reg, event);

		memset(&ev, 0, sizeof(ev));
		ev.type = UMMUNOTIFY_EVENT_TYPE_INVAL;
		ev.flags = r->flags;
		if (r->flags & UMMUNOTIFY_EVENT_FLAG_HINT) {
			ev.hint_start = r->hint_start;
			ev.hint_end = r->hint_end;
		}
		ev.user_cookie_counter = r->cookie;
		if (copy_to_user(buf + n * sizeof(ev), &ev, sizeof(ev))) {
			*fault = true;
			return n;
		}
		list_del_init(&r->event);
		r->queued = false;
		r->flags = 0;
		n++;
	}
	if (!list_empty(&f->events))
		return n;
	if (n == max) {
		f->need_last = true;
		return n;
	}
	memset(&ev, 0, sizeof(ev));
	ev.type = UMMUNOTIFY_EVENT_TYPE_LAST;
	ev.user_cookie_counter = f->area[0];
	if (copy_to_user(buf + n * sizeof(ev), &ev, sizeof(ev))) {
		*fault = true;
		f->need_last = true;
		return n;
	}
	f->need_last = false;
	return n + 1;
}

static ssize_t umn_read(struct file *file, char __user *buf, size_t count, loff_t *pos)
{
	struct umn_file *f = file->private_data;
	size_t max = count / sizeof(struct ummunotify_event), n;
	bool fault;
	int ret;

	if (!max)
		return -EINVAL;
	for (;;) {
		if (!umn_readable(f)) {
			if (file->f_flags & O_NONBLOCK)
				return -EAGAIN;
			ret = wait_event_interruptible(f->wq, umn_readable(f));
			if (ret)
				return ret;
		}
		fault = false;
		spin_lock(&f->lock);
		pagefault_disable();
		n = umn_copy_events(f, buf, max, &fault);
		pagefault_enable();
		spin_unlock(&f->lock);
		if (n)
			return n * sizeof(struct ummunotify_event);
		if (fault) {
			/* Fault the first record in, outside the lock, and retry. */
			if (fault_in_writeable(buf, sizeof(struct ummunotify_event)))
				return -EFAULT;
			continue;
		}
		/* Raced with an unregister that emptied the queue: wait again. */
	}
}

static __poll_t umn_poll(struct file *file, struct poll_table_struct *wait)
{
	struct umn_file *f = file->private_data;

	poll_wait(file, &f->wq, wait);
	return umn_readable(f) ? EPOLLIN | EPOLLRDNORM : 0;
}

static int umn_fasync(int fd, struct file *file, int on)
{
	struct umn_file *f = file->private_data;

	return fasync_helper(fd, file, on, &f->fasync);
}

static int umn_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct umn_file *f = file->private_data;
	size_t len = vma->vm_end - vma->vm_start;
	int ret;

	/*
	 * MAP_SHARED of a descriptor opened O_RDONLY has VM_MAYSHARE but
	 * not VM_SHARED (do_mmap clears it): test the former.
	 */
	if (vma->vm_pgoff || (vma->vm_flags & VM_WRITE) || !(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	mutex_lock(&f->setup);
	if (len > f->area_len) {
		ret = -EINVAL;
		goto out;
	}
	/* Read-only for good: mprotect(PROT_WRITE) fails, a store faults. */
	vm_flags_clear(vma, VM_MAYWRITE);
	ret = remap_vmalloc_range(vma, f->area, 0);
	if (!ret) {
		spin_lock(&f->lock);
		f->mapped = true;
		spin_unlock(&f->lock);
	}
out:
	mutex_unlock(&f->setup);
	return ret;
}

static const struct file_operations umn_fops = {
	.owner		= THIS_MODULE,
	.open		= umn_open,
	.release	= umn_release,
	.read		= umn_read,
	.poll		= umn_poll,
	.fasync		= umn_fasync,
	.mmap		= umn_mmap,
	.unlocked_ioctl	= umn_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
};

static struct miscdevice umn_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "ummunotify",
	.fops	= &umn_fops,
	/* Each file only ever sees its own process's memory map. */
	.mode	= 0666,
};

module_misc_device(umn_misc);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ummunotify: memory-map change events for registered ranges (RDMA caches)");
MODULE_AUTHOR("regcache project");
