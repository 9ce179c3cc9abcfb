// The log sits at its newest line: when its text changes, and when it first appears. Gradio mounts a
// tab's content on the tab's first opening, and the log read as the page loaded may already be there
// then: no change follows to scroll it.
const follow = () => {
  const log = element.querySelector('.koubo-log');
  if (log) log.scrollTop = log.scrollHeight;
};
follow();
new MutationObserver(follow).observe(element, {childList: true, subtree: true});
