// A windowed list: rows of one fixed height, only those in view (and a couple more) in the
// DOM, so a list of a million rows costs what forty do. Browsers cap an element's height
// (Chromium near 33 million px), so a taller list maps its scroll position onto a shorter
// spacer. `controller.current` gets `scrollToIndex(i)` and `scrollToEnd()`.

import { useLayoutEffect, useRef, useState } from 'preact/hooks';

const MAX_SPACER_PX = 8_000_000;

export function VirtualList({ count, rowHeight, renderRow, controller, onScroll, class: className, ...rest }) {
  const scroller = useRef(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewport, setViewport] = useState(600);

  useLayoutEffect(() => {
    const element = scroller.current;
    const observer = new ResizeObserver(() => setViewport(element.clientHeight || 600));
    observer.observe(element);
    return () => observer.disconnect();
  }, []);

  const total = count * rowHeight;
  const spacer = Math.min(total, MAX_SPACER_PX);
  // Real pixels per scrolled pixel: 1 unless the list is taller than the spacer.
  const ratio = total > spacer ? (total - viewport) / Math.max(1, spacer - viewport) : 1;
  const realTop = Math.min(scrollTop * ratio, Math.max(0, total - viewport));
  const first = Math.max(0, Math.floor(realTop / rowHeight));
  const offset = realTop - first * rowHeight;
  const last = Math.min(count, first + Math.ceil(viewport / rowHeight) + 2);

  if (controller) {
    controller.current = {
      scrollToIndex(index, center = true) {
        const element = scroller.current;
        const target = index * rowHeight - (center ? (viewport - rowHeight) / 2 : 0);
        element.scrollTop = Math.max(0, target / ratio);
      },
      scrollToEnd() {
        const element = scroller.current;
        element.scrollTop = element.scrollHeight;
      },
      atEnd() {
        const element = scroller.current;
        return element.scrollTop + element.clientHeight >= element.scrollHeight - rowHeight * 1.5;
      },
    };
  }

  const rows = [];
  for (let index = first; index < last; index++) rows.push(renderRow(index));

  return (
    <div
      ref={scroller}
      class={`virtual-list ${className ?? ''}`}
      onScroll={(event) => {
        setScrollTop(event.currentTarget.scrollTop);
        onScroll?.(event);
      }}
      {...rest}
    >
      <div class="virtual-spacer" style={{ height: `${spacer}px` }}>
        <div class="virtual-rows" style={{ top: `${scrollTop - offset}px` }}>{rows}</div>
      </div>
    </div>
  );
}
