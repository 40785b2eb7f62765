// The impact picture: CIs as nodes and relationships as arrows (source to target, labelled
// with the type), drawn by Cytoscape.js with a layered layout from the roots (the CIs
// failing). Services are diamonds; DOWN is red, DEGRADED orange; a root has a thick border.
// Every node is also in the tables beside the picture, so the picture is never the only way
// to reach a CI.

const COLOURS = { DOWN: '#d92d20', DEGRADED: '#f79009', none: '#5b8def', service: '#7f56d9' };

const STYLE = [
  { selector: 'node', style: {
    label: 'data(label)', 'font-size': 10, 'text-valign': 'bottom', 'text-margin-y': 3,
    'background-color': 'data(colour)', width: 18, height: 18, 'min-zoomed-font-size': 7,
    'text-wrap': 'ellipsis', 'text-max-width': 120 } },
  { selector: 'node.service', style: { shape: 'diamond', width: 26, height: 26, 'font-weight': 'bold' } },
  { selector: 'node.root', style: { 'border-width': 4, 'border-color': '#101828', width: 28, height: 28, 'font-size': 12, 'font-weight': 'bold' } },
  { selector: 'edge', style: {
    width: 1.5, 'line-color': '#98a2b3', 'target-arrow-color': '#98a2b3', 'target-arrow-shape': 'triangle',
    'curve-style': 'bezier', label: 'data(type)', 'font-size': 7, color: '#475467', 'text-rotation': 'autorotate',
    'min-zoomed-font-size': 8 } },
  { selector: 'node:selected', style: { 'border-width': 3, 'border-color': '#f79009' } },
];

/**
 * Draws `nodes` ({id, label, severity, service, root}) and `edges` ({id, source, target,
 * type}) into `container`; `onOpen(id)` is called when a node is clicked. Returns the
 * Cytoscape instance (kept on `window.cmdbConsole.picture` for tests and the curious).
 */
export function drawPicture(container, nodes, edges, onOpen) {
  if (!window.cytoscape) {
    container.textContent = 'The picture library did not load; the tables below hold the same.';
    return null;
  }
  const elements = [
    ...nodes.map((node) => ({
      data: {
        id: node.id, label: node.label,
        colour: node.severity ? COLOURS[node.severity] : (node.service ? COLOURS.service : COLOURS.none),
      },
      classes: [node.service ? 'service' : '', node.root ? 'root' : ''].join(' ').trim(),
    })),
    ...edges.map((edge) => ({ data: { id: `e${edge.id}`, source: edge.source, target: edge.target, type: edge.type } })),
  ];
  const roots = nodes.filter((node) => node.root).map((node) => node.id);
  const picture = window.cytoscape({
    container,
    elements,
    style: STYLE,
    layout: { name: 'breadthfirst', directed: false, roots: roots.length ? roots : undefined, spacingFactor: 1.15, animate: false },
    minZoom: 0.1,
    maxZoom: 3,
  });
  picture.on('tap', 'node', (event) => onOpen(event.target.id()));
  window.cmdbConsole = Object.assign(window.cmdbConsole || {}, { picture });
  return picture;
}

/**
 * The nodes and arrows of an impact answer: each reached CI hangs from the CI before it on
 * its path, by the relationship crossed, drawn the way the relationship points.
 */
export function impactElements(impact) {
  const nodes = new Map();
  for (const root of impact.roots) {
    nodes.set(root.id, { id: root.id, label: root.name, root: true, service: root.class === 'business_service' });
  }
  const edges = new Map();
  for (const reached of impact.reached) {
    nodes.set(reached.ci.id, {
      id: reached.ci.id, label: reached.ci.name, severity: reached.severity,
      service: reached.ci.class === 'business_service',
    });
    const step = reached.path[reached.path.length - 1];
    if (step) edges.set(step.relationshipId, { id: step.relationshipId, source: step.sourceId, target: step.targetId, type: step.type });
  }
  // An arrow needs both ends on the picture (a path may pass a CI cut off by the bound).
  const drawn = [...edges.values()].filter((edge) => nodes.has(edge.source) && nodes.has(edge.target));
  return { nodes: [...nodes.values()], edges: drawn };
}
